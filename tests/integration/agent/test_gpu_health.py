"""GPU health signals through the real probe child (``nvml_probe.py`` as a process) with
the fake NVML: an XID burst, thermal throttling, a retired page, row remapping, ECC."""

from __future__ import annotations

from typing import Any

import pytest

from fleetpulse.agent import GpuCollector, resource_metrics
from fleetpulse.agent.fake_nvml import scenario_env
from fleetpulse.messages import GpuMetrics

pytestmark = [pytest.mark.timeout(40)]

DEVICE: dict[str, Any] = {
    "name": "NVIDIA RTX A6000",
    "uuid": "GPU-health",
    "total_gb": 48.0,
    "free_gb": 40.0,
    "util": 5,
    "temp": 50,
    "power_mw": 80000,
}


async def samples(devices: list[dict[str, Any]], count: int, hold_s: float = 600.0) -> list[Any]:
    """``count`` contributions from one probe child."""
    out = []
    async with GpuCollector(
        timeout_s=10.0,
        start_timeout_s=20.0,
        nvml_module="fake_nvml",
        xid_hold_s=hold_s,
        env=scenario_env({"devices": devices}),
    ) as probe:
        for _ in range(count):
            part = await probe.collect()
            assert not part.gpu_failed, part.errors
            out.append(part)
    return out


def only(part: Any) -> GpuMetrics:
    [gpu] = part.gpus
    assert isinstance(gpu, GpuMetrics)
    return gpu


async def test_an_xid_burst_degrades_the_gpu_and_it_stays_degraded_for_the_hold() -> None:
    device = {**DEVICE, "xids": [[2, 94], [2, 94], [2, 13]]}
    first, burst, after = (only(p) for p in await samples([device], 3))
    assert (first.health, first.xid_events) == ("ok", [])
    assert burst.xid_events == [94, 94, 13]
    assert (burst.health, burst.health_reasons) == ("degraded", ["xid:94"])  # 13: the app's
    assert after.xid_events == []
    assert after.health == "degraded"  # held: an XID predicts the next job failing too


async def test_an_xid_stops_counting_after_the_hold() -> None:
    device = {**DEVICE, "xids": [[1, 94]]}
    first, second = (only(p) for p in await samples([device], 2, hold_s=0.0))
    assert first.xid_events == [94]
    assert second.health == "ok"


async def test_an_application_xid_alone_leaves_the_gpu_ok() -> None:
    device = {**DEVICE, "xids": [[1, 13], [1, 43]]}
    [part] = await samples([device], 1)
    assert (only(part).xid_events, only(part).health) == ([13, 43], "ok")


async def test_a_fatal_xid_fails_the_gpu_and_it_is_no_capacity() -> None:
    sick = {**DEVICE, "uuid": "GPU-sick", "xids": [[1, 79]]}
    well = {**DEVICE, "uuid": "GPU-well", "free_gb": 10.0}
    [part] = await samples([sick, well], 1)
    gpus = {g.uuid: g for g in part.gpus}
    assert (gpus["GPU-sick"].health, gpus["GPU-sick"].health_reasons) == ("failed", ["xid:79"])
    metrics = resource_metrics([part])
    assert (metrics.gpu_count, metrics.gpu_vram_available_gb) == (1, 10.0)


async def test_thermal_throttling_degrades_but_a_power_cap_does_not() -> None:
    hot = {**DEVICE, "uuid": "GPU-hot", "throttle": 0x40 | 0x4}
    capped = {**DEVICE, "uuid": "GPU-capped", "throttle": 0x4, "free_gb": 30.0}
    [part] = await samples([hot, capped], 1)
    gpus = {g.uuid: g for g in part.gpus}
    assert gpus["GPU-hot"].throttle_reasons == ["sw_power_cap", "hw_thermal"]
    assert (gpus["GPU-hot"].health, gpus["GPU-hot"].health_reasons) == (
        "degraded",
        ["throttle:hw_thermal"],
    )
    assert (gpus["GPU-capped"].health, gpus["GPU-capped"].throttle_reasons) == (
        "ok",
        ["sw_power_cap"],
    )
    metrics = resource_metrics([part])  # the degraded GPU is not in the summary
    assert (metrics.gpu_count, metrics.gpu_vram_available_gb) == (1, 30.0)


async def test_a_retired_page_pending_degrades_and_is_counted() -> None:
    device = {**DEVICE, "retired_pages": {"sbe": 2, "dbe": 1}, "retired_pending": True}
    gpu = only((await samples([device], 1))[0])
    assert (gpu.retired_pages, gpu.retired_pages_pending) == (3, True)
    assert (gpu.health, gpu.health_reasons) == ("degraded", ["retired_pages_pending"])


async def test_row_remapping_failure_fails_and_ecc_errors_degrade() -> None:
    remap = {**DEVICE, "uuid": "GPU-remap", "remapped_rows": [0, 4, False, True]}
    ecc = {**DEVICE, "uuid": "GPU-ecc", "ecc_uncorrected": 2, "remapped_rows": [1, 0, 1, 0]}
    [part] = await samples([remap, ecc], 1)
    gpus = {g.uuid: g for g in part.gpus}
    assert (gpus["GPU-remap"].health, gpus["GPU-remap"].health_reasons) == (
        "failed",
        ["row_remap_failure"],
    )
    assert gpus["GPU-ecc"].ecc_uncorrected == 2
    assert gpus["GPU-ecc"].health_reasons == ["row_remap_pending", "ecc_uncorrected"]


async def test_a_device_without_health_calls_is_ok_and_quiet() -> None:
    device = {**DEVICE, "unsupported": ["xid", "throttle"]}
    [part] = await samples([device], 1)
    gpu = only(part)
    assert (gpu.health, gpu.throttle_reasons, gpu.retired_pages, gpu.ecc_uncorrected) == (
        "ok",
        [],
        None,
        None,
    )
    assert part.errors == ()


async def test_a_lost_gpu_is_failed() -> None:
    [part] = await samples([{**DEVICE, "lost": True}], 1)
    gpu = only(part)
    assert gpu.error == "gpu 0: GPU is lost"
    assert gpu.health == "failed"
