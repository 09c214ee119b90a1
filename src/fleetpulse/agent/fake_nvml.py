"""A stand-in for ``pynvml`` with the same call surface, for tests and demos.

Its behaviour is a scenario (a dict; in the probe child it comes as JSON from
``FLEETPULSE_FAKE_NVML``)::

    {"absent": false,               # nvmlInit fails as if no driver were installed
     "init_error": null,            # an NVML error code nvmlInit raises instead
     "hang": null,                  # "import", "init" or "sample": block forever there,
                                    #   like a wedged driver (or a stuck interpreter)
     "hang_after": 0,               # with "sample": samples answered before hanging
     "hang_marker": null,           # a path: hang only while the file does not exist yet
                                    #   (created on hanging), so a respawned probe recovers
     "crash_after": null,           # exit the process after this many samples
     "devices": [{"name": "...", "uuid": "...", "total_gb": 24.0, "free_gb": 20.5,
                  "util": 3, "temp": 41, "power_mw": 31500,
                  "unsupported": ["util", "temp", "power_mw", "memory_v2"],
                  "failing": ["temp"],      # fields that raise an unexpected error
                  "lost": false,
                  # health signals; a key left out is "not supported" on this device
                  # (xid and throttle are supported unless listed in "unsupported")
                  "xids": [[2, 79]],        # [sample number (1 = first), xid]: an XID event
                                            #   that arrives during that sample
                  "throttle": 64,           # nvmlClocksThrottleReason* bit mask (0x40 thermal)
                  "retired_pages": {"sbe": 0, "dbe": 1},
                  "retired_pending": true,
                  "remapped_rows": [0, 0, false, false],  # corrected, uncorrected, pending,
                                                          #   failure
                  "ecc_uncorrected": 0}]}

Standard library only: the probe child imports it by the name ``fake_nvml``.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

__all__ = ["ENV", "FakeNvml", "NVMLError", "scenario_env"]

ENV = "FLEETPULSE_FAKE_NVML"
GIB = 1024**3

NVML_TEMPERATURE_GPU = 0
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_UNKNOWN = 999
nvmlMemory_v2 = 0x02000028
nvmlEventTypeXidCriticalError = 0x8

_MESSAGES = {
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
    NVML_ERROR_TIMEOUT: "Timeout",
}


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return _MESSAGES.get(self.value, f"NVML Error with code {self.value}")


def scenario_env(scenario: dict[str, Any]) -> dict[str, str]:
    """The environment entry that hands ``scenario`` to a probe child."""
    return {ENV: json.dumps(scenario)}


def _block_forever() -> None:
    threading.Event().wait()


class FakeNvml:
    NVMLError = NVMLError
    NVML_TEMPERATURE_GPU = NVML_TEMPERATURE_GPU
    nvmlMemory_v2 = nvmlMemory_v2
    nvmlEventTypeXidCriticalError = nvmlEventTypeXidCriticalError

    def __init__(self, scenario: dict[str, Any] | None = None) -> None:
        self.scenario = scenario or {}
        self.samples = 0
        self.initialised = False
        self.registered: set[int] = set()
        self.delivered: set[tuple[int, int]] = set()  # (device, position in its "xids")

    def _maybe_hang(self, stage: str) -> None:
        if self.scenario.get("hang") != stage:
            return
        if stage == "sample" and self.samples < int(self.scenario.get("hang_after", 0)):
            return
        marker = self.scenario.get("hang_marker")
        if marker is not None:
            if Path(marker).exists():
                return
            Path(marker).touch()
        _block_forever()

    def _device(self, handle: int) -> dict[str, Any]:
        device: dict[str, Any] = self.scenario.get("devices", [])[handle]
        if device.get("lost"):
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        return device

    def _field(self, handle: int, name: str) -> Any:
        device = self._device(handle)
        if name in device.get("unsupported", []):
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        if name in device.get("failing", []):
            raise NVMLError(NVML_ERROR_UNKNOWN)
        return device.get(name)

    def nvmlInit(self) -> None:
        if self.scenario.get("absent"):
            raise NVMLError(NVML_ERROR_LIBRARY_NOT_FOUND)
        if self.scenario.get("init_error") is not None:
            raise NVMLError(int(self.scenario["init_error"]))
        self._maybe_hang("init")
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.initialised = False

    def nvmlDeviceGetCount(self) -> int:
        crash_after = self.scenario.get("crash_after")
        if crash_after is not None and self.samples >= int(crash_after):
            os._exit(3)
        self._maybe_hang("sample")
        self.samples += 1
        return len(self.scenario.get("devices", []))

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        self._device(index)
        return index

    def nvmlDeviceGetMemoryInfo(self, handle: int, version: int | None = None) -> Any:
        device = self._device(handle)
        if version is not None and "memory_v2" in device.get("unsupported", []):
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        total = int(float(device.get("total_gb", 0.0)) * GIB)
        free = int(float(device.get("free_gb", 0.0)) * GIB)
        return SimpleNamespace(total=total, free=free, used=total - free)

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return str(self._device(handle).get("uuid", f"GPU-fake-{handle}"))

    def nvmlDeviceGetName(self, handle: int) -> bytes:
        return str(self._device(handle).get("name", "Fake GPU")).encode()

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        return SimpleNamespace(gpu=self._field(handle, "util"), memory=0)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> Any:
        return self._field(handle, "temp")

    def nvmlDeviceGetPowerUsage(self, handle: int) -> Any:
        return self._field(handle, "power_mw")

    def nvmlDeviceGetIndex(self, handle: int) -> int:
        return handle

    def _supported(self, handle: int, name: str) -> dict[str, Any]:
        device = self._device(handle)
        if name in device.get("unsupported", []):
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return device

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: int) -> int:
        return int(self._supported(handle, "throttle").get("throttle", 0))

    def _present(self, handle: int, name: str) -> Any:
        device = self._supported(handle, name)
        if name not in device:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return device[name]

    def nvmlDeviceGetRetiredPages(self, handle: int, cause: int) -> list[int]:
        pages = self._present(handle, "retired_pages")
        count = int(pages.get("dbe" if cause == 1 else "sbe", 0))
        return [0x1000 * (i + 1) for i in range(count)]

    def nvmlDeviceGetRetiredPagesPendingStatus(self, handle: int) -> int:
        return 1 if self._present(handle, "retired_pending") else 0

    def nvmlDeviceGetRemappedRows(self, handle: int) -> tuple[int, int, int, int]:
        corrected, uncorrected, pending, failure = self._present(handle, "remapped_rows")
        return int(corrected), int(uncorrected), int(bool(pending)), int(bool(failure))

    def nvmlDeviceGetTotalEccErrors(self, handle: int, error_type: int, counter: int) -> int:
        return int(self._present(handle, "ecc_uncorrected"))

    def nvmlEventSetCreate(self) -> object:
        return object()

    def nvmlDeviceRegisterEvents(self, handle: int, kinds: int, event_set: object) -> None:
        self._supported(handle, "xid")
        self.registered.add(handle)

    def nvmlEventSetWait_v2(self, event_set: object, timeout_ms: int) -> Any:
        """The next XID due by the current sample on a registered device, else a timeout."""
        for handle in sorted(self.registered):
            for position, (due, xid) in enumerate(self._device(handle).get("xids", [])):
                if due <= self.samples and (handle, position) not in self.delivered:
                    self.delivered.add((handle, position))
                    return SimpleNamespace(
                        device=handle, eventType=nvmlEventTypeXidCriticalError, eventData=xid
                    )
        raise NVMLError(NVML_ERROR_TIMEOUT)

    def nvmlEventSetFree(self, event_set: object) -> None:
        self.registered.clear()


_default: FakeNvml | None = None

if json.loads(os.environ.get(ENV, "{}")).get("hang") == "import":
    _block_forever()


def __getattr__(name: str) -> Any:
    """Module-level calls (``fake_nvml.nvmlInit()``) go to one instance built from the env."""
    global _default
    if not name.startswith("nvml"):
        raise AttributeError(name)
    if _default is None:
        _default = FakeNvml(json.loads(os.environ.get(ENV, "{}")))
    return getattr(_default, name)
