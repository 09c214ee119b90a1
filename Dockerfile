# fleetpulse: one image for every component (`fleetpulse agent|ingest|api|simulate|db ...`), so
# it carries every extra (`pip install fleetpulse` alone is the light agent).
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/opt/fleetpulse

RUN pip install --no-cache-dir uv

WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --extra all --no-install-project
COPY src ./src
RUN uv sync --frozen --no-dev --extra all

ENV PATH="/opt/fleetpulse/bin:$PATH"
RUN useradd --create-home --uid 10001 fleetpulse
USER fleetpulse
WORKDIR /home/fleetpulse
ENTRYPOINT ["fleetpulse"]
CMD ["--help"]
