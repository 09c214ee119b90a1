"""The GPU probe: a child process that talks to NVML so the agent never has to.

NVML calls can block inside the driver where no thread timeout reaches them, so the
agent runs this file as a child (``python nvml_probe.py MODULE``) and kills it when a
sample is late. It imports only the standard library and the NVML module named by
MODULE (``pynvml`` from nvidia-ml-py; tests name the fake beside this file,
``fake_nvml``, importable because this file's folder heads ``sys.path``).

Usage: ``python nvml_probe.py MODULE [XID_HOLD_S]``. Protocol, one JSON object per line:
the child prints ``{"ready": true}`` once imported, then answers every ``sample`` line on
stdin with one of
``{"gpus": [...], "errors": [...]}``, ``{"error": "..."}`` (NVML failed this time) or
``{"absent": "..."}`` (no driver or library: it then exits and is not restarted).
A field a device does not support is null; a device that fails (lost, unreadable
memory) is listed with its ``error`` and the others still report.

Health, per device (:func:`gpu_health`, pure): XID critical errors from an NVML event set
(those since the last sample in ``xid_events``; one keeps the GPU degraded, or failed for
the fatal ones, for XID_HOLD_S seconds, default 600; application XIDs such as 13, 31, 43
are listed but, as in NVIDIA's device plugin, do not count), clock throttle reasons
(thermal, HW slowdown, power brake degrade; a power cap is normal under load), retired
pages and pending retirement, row remapping (pending degrades, a failure fails) and
uncorrected volatile ECC errors. A call the device or driver lacks is left out quietly.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import signal
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, TextIO

__all__ = ["HealthWatch", "gpu_health", "main", "sample_all", "sample_device", "throttle_names"]

GIB = 1024.0**3
NOT_SUPPORTED = 3
DRIVER_NOT_LOADED = 9
LIBRARY_NOT_FOUND = 12
FUNCTION_NOT_FOUND = 13
GPU_IS_LOST = 15
TIMEOUT = 10
ARGUMENT_VERSION_MISMATCH = 25
ABSENT = frozenset({DRIVER_NOT_LOADED, LIBRARY_NOT_FOUND})
QUIET = frozenset({NOT_SUPPORTED, FUNCTION_NOT_FOUND})

XID_CRITICAL_ERROR = 0x8  # nvmlEventTypeXidCriticalError
DEFAULT_XID_HOLD_S = 600.0
# XIDs after which the GPU needs a reset or a technician (double-bit ECC, row-remapper
# failure, fallen off the bus, uncontained ECC).
FATAL_XIDS = frozenset({48, 64, 79, 95})
# Raised by a faulting application, not a sick GPU; NVIDIA's k8s device plugin skips them too.
APPLICATION_XIDS = frozenset({13, 31, 43, 45, 68, 109})
# nvmlClocksThrottleReason* / nvmlClocksEventReason* bits
THROTTLE_BITS = (
    (0x4, "sw_power_cap"),
    (0x8, "hw_slowdown"),
    (0x10, "sync_boost"),
    (0x20, "sw_thermal"),
    (0x40, "hw_thermal"),
    (0x80, "power_brake"),
)
DEGRADING_THROTTLE = frozenset({"hw_slowdown", "sw_thermal", "hw_thermal", "power_brake"})
PAGE_RETIREMENT_CAUSES = (0, 1)  # multiple single-bit ECC errors, a double-bit ECC error
MEMORY_ERROR_TYPE_UNCORRECTED = 1
VOLATILE_ECC = 0


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
        if code not in QUIET:
            notes.append(f"{label}: {exc}")
        return None
    except AttributeError:  # an nvidia-ml-py older than the call
        return None


def throttle_names(mask: int) -> list[str]:
    return [name for bit, name in THROTTLE_BITS if mask & bit]


def gpu_health(
    *,
    xids: Iterable[int] = (),
    throttle: Iterable[str] = (),
    retired_pending: bool | None = None,
    remap_pending: bool | None = None,
    remap_failed: bool | None = None,
    ecc_uncorrected: int | None = None,
) -> tuple[str, list[str]]:
    """``ok``, ``degraded`` or ``failed`` with the reasons, from one device's signals."""
    failed: list[str] = []
    degraded: list[str] = []
    for xid in sorted(set(xids)):
        if xid in FATAL_XIDS:
            failed.append(f"xid:{xid}")
        elif xid not in APPLICATION_XIDS:
            degraded.append(f"xid:{xid}")
    if remap_failed:
        failed.append("row_remap_failure")
    degraded.extend(f"throttle:{name}" for name in throttle if name in DEGRADING_THROTTLE)
    if retired_pending:
        degraded.append("retired_pages_pending")
    if remap_pending:
        degraded.append("row_remap_pending")
    if ecc_uncorrected:
        degraded.append("ecc_uncorrected")
    if failed:
        return "failed", (failed + degraded)[:16]
    if degraded:
        return "degraded", degraded[:16]
    return "ok", []


class HealthWatch:
    """XID critical errors through one NVML event set for all devices: :meth:`drain` takes
    what arrived since the last sample, :meth:`held` what still counts (``hold_s``)."""

    def __init__(
        self, nvml: Any, hold_s: float, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.nvml = nvml
        self.hold_s = hold_s
        self._monotonic = monotonic
        self._event_set: Any = None
        self.started = False
        self.watched: set[int] = set()
        self._seen: list[tuple[float, int, int]] = []  # (at, device index, xid)

    def start(self, count: int) -> None:
        nvml = self.nvml
        self.started = True
        try:
            self._event_set = nvml.nvmlEventSetCreate()
        except (nvml.NVMLError, AttributeError):
            return
        kind = getattr(nvml, "nvmlEventTypeXidCriticalError", XID_CRITICAL_ERROR)
        for index in range(count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                nvml.nvmlDeviceRegisterEvents(handle, kind, self._event_set)
            except nvml.NVMLError:
                continue  # not supported here (Windows, old boards): no XIDs for this one
            self.watched.add(index)

    def _wait(self) -> Any:
        nvml = self.nvml
        wait = getattr(nvml, "nvmlEventSetWait_v2", None) or nvml.nvmlEventSetWait
        return wait(self._event_set, 0)

    def drain(self) -> dict[int, list[int]]:
        """New XIDs per device index since the last call (bounded per sample)."""
        fresh: dict[int, list[int]] = {}
        if self._event_set is None:
            return fresh
        nvml = self.nvml
        now = self._monotonic()
        for _ in range(1024):
            try:
                data = self._wait()
            except nvml.NVMLError as exc:
                if _code(exc) != TIMEOUT:
                    raise
                break
            try:
                index = int(nvml.nvmlDeviceGetIndex(data.device))
            except nvml.NVMLError:
                continue
            xid = int(data.eventData)
            fresh.setdefault(index, []).append(xid)
            self._seen.append((now, index, xid))
        self._seen = [s for s in self._seen if now - s[0] < self.hold_s]
        return fresh

    def held(self, index: int) -> list[int]:
        return [xid for _at, device, xid in self._seen if device == index]

    def close(self) -> None:
        if self._event_set is not None:
            with contextlib.suppress(Exception):
                self.nvml.nvmlEventSetFree(self._event_set)
            self._event_set = None


def _health_fields(
    nvml: Any,
    handle: Any,
    index: int,
    notes: list[str],
    watch: HealthWatch | None,
    fresh: list[int],
) -> dict[str, Any]:
    label = f"gpu {index}"
    reasons_read = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or getattr(
        nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None
    )
    mask = None
    if reasons_read is not None:
        mask = _optional(nvml, lambda: reasons_read(handle), f"{label} throttle", notes)
    throttle = throttle_names(int(mask)) if mask is not None else []
    retired: int | None = None
    for cause in PAGE_RETIREMENT_CAUSES:
        pages = _optional(
            nvml,
            functools.partial(nvml.nvmlDeviceGetRetiredPages, handle, cause),
            f"{label} retired_pages",
            notes,
        )
        if pages is not None:
            retired = (retired or 0) + len(pages)
    pending_status = _optional(
        nvml,
        lambda: nvml.nvmlDeviceGetRetiredPagesPendingStatus(handle),
        f"{label} retired_pages_pending",
        notes,
    )
    pending = None if pending_status is None else bool(int(pending_status))
    remapped = _optional(
        nvml, lambda: nvml.nvmlDeviceGetRemappedRows(handle), f"{label} remapped_rows", notes
    )
    ecc = _optional(
        nvml,
        lambda: nvml.nvmlDeviceGetTotalEccErrors(
            handle, MEMORY_ERROR_TYPE_UNCORRECTED, VOLATILE_ECC
        ),
        f"{label} ecc",
        notes,
    )
    held = watch.held(index) if watch is not None else fresh
    health, reasons = gpu_health(
        xids=held,
        throttle=throttle,
        retired_pending=pending,
        remap_pending=None if remapped is None else bool(remapped[2]),
        remap_failed=None if remapped is None else bool(remapped[3]),
        ecc_uncorrected=None if ecc is None else int(ecc),
    )
    return {
        "health": health,
        "health_reasons": reasons,
        "xid_events": fresh[:32],
        "throttle_reasons": throttle,
        "retired_pages": retired,
        "retired_pages_pending": pending,
        "ecc_uncorrected": None if ecc is None else int(ecc),
    }


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


def sample_device(
    nvml: Any, index: int, watch: HealthWatch | None = None, fresh: list[int] | None = None
) -> tuple[dict[str, Any], list[str]]:
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
        health = _health_fields(nvml, handle, index, notes, watch, fresh or [])
    except nvml.NVMLError as exc:
        return {
            "index": index,
            "error": f"gpu {index}: {exc}",
            "health": "failed",
            "health_reasons": [f"nvml:{_code(exc) or 'error'}"],
            "xid_events": (fresh or [])[:32],
        }, notes
    return {
        **health,
        "index": index,
        "uuid": _text(uuid),
        "name": _text(name),
        "vram_total_gb": round(total / GIB, 3),
        "vram_free_gb": round(free / GIB, 3),
        "util_pct": None if util is None else float(util),
        "temp_c": None if temp is None else float(temp),
        "power_w": None if power_mw is None else round(float(power_mw) / 1000.0, 3),
    }, notes


def sample_all(nvml: Any, watch: HealthWatch | None = None) -> dict[str, Any]:
    gpus: list[dict[str, Any]] = []
    errors: list[str] = []
    count = int(nvml.nvmlDeviceGetCount())
    if watch is not None and not watch.started:
        watch.start(count)
    fresh = watch.drain() if watch is not None else {}
    for index in range(count):
        device, notes = sample_device(nvml, index, watch, fresh.get(index, []))
        gpus.append(device)
        errors.extend(notes)
    return {"gpus": gpus, "errors": errors}


def main(argv: list[str], stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> int:
    module_name = argv[1] if len(argv) > 1 else "pynvml"
    hold_s = float(argv[2]) if len(argv) > 2 else DEFAULT_XID_HOLD_S
    watch: HealthWatch | None = None

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
                watch = HealthWatch(nvml, hold_s)
            send(sample_all(nvml, watch))
        except Exception as exc:  # anything NVML throws is this sample's failure, not ours
            send({"error": f"gpu: {exc}" if str(exc) else f"gpu: {type(exc).__name__}"})
    if initialised:
        if watch is not None:
            watch.close()
        # shutting down a sick driver may fail too; we are leaving anyway
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()
    return 0


if __name__ == "__main__":
    # Ctrl-C reaches the whole process group; the agent decides when the probe ends
    # (SIGTERM, or EOF on stdin when the agent itself is gone).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(main(sys.argv))
