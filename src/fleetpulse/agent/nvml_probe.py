"""The GPU probe: a child process that talks to NVML so the agent never has to.

NVML calls can block inside the driver where no thread timeout reaches them, so the
agent runs this file as a child (``python nvml_probe.py MODULE``) and kills it when a
sample is late. It imports only the standard library and the NVML module named by
MODULE (``pynvml`` from nvidia-ml-py; tests name the fake beside this file,
``fake_nvml``, importable because this file's folder heads ``sys.path``).

Protocol, one JSON object per line: the child prints ``{"ready": true}`` once
imported, then answers every ``sample`` line on stdin with one of
``{"gpus": [...], "errors": [...]}``, ``{"error": "..."}`` (NVML failed this time) or
``{"absent": "..."}`` (no driver or library: it then exits and is not restarted).
A field a device does not support is null; a device that fails (lost, unreadable
memory) is listed with its ``error`` and the others still report.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import signal
import sys
from collections.abc import Callable
from typing import Any, TextIO

__all__ = ["main", "sample_all", "sample_device"]

GIB = 1024.0**3
NOT_SUPPORTED = 3
DRIVER_NOT_LOADED = 9
LIBRARY_NOT_FOUND = 12
FUNCTION_NOT_FOUND = 13
GPU_IS_LOST = 15
ARGUMENT_VERSION_MISMATCH = 25
ABSENT = frozenset({DRIVER_NOT_LOADED, LIBRARY_NOT_FOUND})


def _code(exc: BaseException) -> int | None:
    value = getattr(exc, "value", None)
    return value if isinstance(value, int) else None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _optional(nvml: Any, read: Callable[[], Any], label: str, notes: list[str]) -> Any:
    """A field that may be unsupported: None then, quietly; a lost GPU still fails the device."""
    try:
        return read()
    except nvml.NVMLError as exc:
        code = _code(exc)
        if code == GPU_IS_LOST:
            raise
        if code != NOT_SUPPORTED:
            notes.append(f"{label}: {exc}")
        return None


def _memory(nvml: Any, handle: Any) -> Any:
    """Memory info v2 where the driver has it (it tells reserved memory apart), else v1."""
    version = getattr(nvml, "nvmlMemory_v2", None)
    if version is not None:
        try:
            return nvml.nvmlDeviceGetMemoryInfo(handle, version=version)
        except nvml.NVMLError as exc:
            if _code(exc) not in {NOT_SUPPORTED, FUNCTION_NOT_FOUND, ARGUMENT_VERSION_MISMATCH}:
                raise
    return nvml.nvmlDeviceGetMemoryInfo(handle)


def sample_device(nvml: Any, index: int) -> tuple[dict[str, Any], list[str]]:
    """One device as a GpuMetrics-shaped dict, plus notes on fields that failed."""
    notes: list[str] = []
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        memory = _memory(nvml, handle)
        total = max(0, int(memory.total))
        free = max(0, min(int(memory.free), total))
        uuid = _optional(nvml, lambda: nvml.nvmlDeviceGetUUID(handle), f"gpu {index} uuid", notes)
        name = _optional(nvml, lambda: nvml.nvmlDeviceGetName(handle), f"gpu {index} name", notes)
        util = _optional(
            nvml,
            lambda: nvml.nvmlDeviceGetUtilizationRates(handle).gpu,
            f"gpu {index} util_pct",
            notes,
        )
        temp = _optional(
            nvml,
            lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU),
            f"gpu {index} temp_c",
            notes,
        )
        power_mw = _optional(
            nvml, lambda: nvml.nvmlDeviceGetPowerUsage(handle), f"gpu {index} power_w", notes
        )
    except nvml.NVMLError as exc:
        return {"index": index, "error": f"gpu {index}: {exc}"}, notes
    return {
        "index": index,
        "uuid": _text(uuid),
        "name": _text(name),
        "vram_total_gb": round(total / GIB, 3),
        "vram_free_gb": round(free / GIB, 3),
        "util_pct": None if util is None else float(util),
        "temp_c": None if temp is None else float(temp),
        "power_w": None if power_mw is None else round(float(power_mw) / 1000.0, 3),
    }, notes


def sample_all(nvml: Any) -> dict[str, Any]:
    gpus: list[dict[str, Any]] = []
    errors: list[str] = []
    for index in range(int(nvml.nvmlDeviceGetCount())):
        device, notes = sample_device(nvml, index)
        gpus.append(device)
        errors.extend(notes)
    return {"gpus": gpus, "errors": errors}


def main(argv: list[str], stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> int:
    module_name = argv[1] if len(argv) > 1 else "pynvml"

    def send(answer: dict[str, Any]) -> None:
        stdout.write(json.dumps(answer) + "\n")
        stdout.flush()

    try:
        nvml: Any = importlib.import_module(module_name)
    except ImportError as exc:
        nvml = None
        missing = f"gpu: cannot import {module_name} ({exc})"
    send({"ready": True})
    initialised = False
    for line in stdin:
        if line.strip() != "sample":
            break
        if nvml is None:
            send({"absent": missing})
            return 0
        try:
            if not initialised:
                try:
                    nvml.nvmlInit()
                except nvml.NVMLError as exc:
                    if _code(exc) in ABSENT:
                        send({"absent": f"gpu: no NVIDIA driver ({exc})"})
                        return 0
                    raise
                initialised = True
            send(sample_all(nvml))
        except Exception as exc:  # anything NVML throws is this sample's failure, not ours
            send({"error": f"gpu: {exc}" if str(exc) else f"gpu: {type(exc).__name__}"})
    if initialised:
        # shutting down a sick driver may fail too; we are leaving anyway
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()
    return 0


if __name__ == "__main__":
    # Ctrl-C reaches the whole process group; the agent decides when the probe ends
    # (SIGTERM, or EOF on stdin when the agent itself is gone).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(main(sys.argv))
