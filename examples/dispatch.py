"""A small dispatcher on fleetpulse.client: find capacity, claim it, "run" a job, release.

    python examples/dispatch.py --api-url http://127.0.0.1:8000 --jobs 3 --min-gpu-vram 8

Each job asks the API which online machines have a GPU with enough free VRAM, claims one
GPU on the best of them, runs (here: sleeps), and releases the claim. When another
dispatcher took that capacity between the answer and the claim, the API answers 409
(``ApiConflict``): the job asks again. A claim expires by itself after ``--ttl`` seconds,
so a dispatcher that dies holds nothing for long.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time
from collections.abc import Sequence

from fleetpulse.client import ApiConflict, Claim, Client, ServiceUnavailable

log = logging.getLogger("dispatch")


class NoCapacity(Exception):
    """Nothing fits after every attempt."""


def place(api: Client, *, holder: str, vram_gb: float, ttl_s: float, attempts: int) -> Claim:
    """Claim one GPU with ``vram_gb`` free on the best machine that has it."""
    for attempt in range(1, attempts + 1):
        found = api.capacity(min_gpu_vram_gb=vram_gb, min_gpu_count=1, limit=1)
        if not found.items:  # all busy: wait a little, then ask again
            time.sleep(min(2.0, 0.1 * attempt))
            continue
        best = found.items[0]
        try:
            return api.claim(
                holder=holder,
                ttl_s=ttl_s,
                agent_id=best.agent_id,
                gpus=[best.matching_gpus[0]],
                vram_gb=vram_gb,
            )
        except ApiConflict as exc:  # taken since the answer: ask again at once
            log.info("attempt %d: %s was taken meanwhile (%s)", attempt, best.hostname, exc.detail)
    raise NoCapacity(f"no GPU with {vram_gb:g} GB free after {attempts} attempts")


def run_job(
    api: Client, job: int, *, holder: str, vram_gb: float, ttl_s: float, run_s: float, attempts: int
) -> str:
    claim = place(api, holder=holder, vram_gb=vram_gb, ttl_s=ttl_s, attempts=attempts)
    gpu = claim.gpus[0]
    print(f"job {job}: running on {claim.hostname} GPU {gpu.index} ({gpu.vram_gb:g} GB held)")
    try:
        time.sleep(run_s)  # the job itself
    finally:
        api.release(claim.claim_id)
    print(f"job {job}: done, released claim {claim.claim_id}")
    return claim.hostname


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--api-url", default=os.environ.get("FLEETPULSE_API_URL", "http://127.0.0.1:8000")
    )
    parser.add_argument("--token", default=os.environ.get("FLEETPULSE_API_TOKEN"))
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--min-gpu-vram", type=float, default=8.0, help="GB free on one GPU")
    parser.add_argument("--run", type=float, default=0.5, help="seconds each job runs")
    parser.add_argument("--ttl", type=float, default=600.0, help="claim expiry, s")
    parser.add_argument("--attempts", type=int, default=20)
    parser.add_argument("--holder", default=f"dispatch@{socket.gethostname()}/{os.getpid()}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        with Client(args.api_url, token=args.token) as api:
            for job in range(1, args.jobs + 1):
                run_job(
                    api,
                    job,
                    holder=args.holder,
                    vram_gb=args.min_gpu_vram,
                    ttl_s=args.ttl,
                    run_s=args.run,
                    attempts=args.attempts,
                )
    except (NoCapacity, ServiceUnavailable) as exc:
        print(f"dispatch: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
