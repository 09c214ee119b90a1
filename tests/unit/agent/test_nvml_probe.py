"""The probe's NVML logic in-process, against the fake NVML (no child, no I/O)."""

from __future__ import annotations

import io
from typing import Any

import pytest

from fleetpulse.agent import fake_nvml, nvml_probe
from fleetpulse.agent.fake_nvml import FakeNvml

DEVICE: dict[str, Any] = {
    "name": "NVIDIA RTX A6000",
    "uuid": "GPU-1",
    "total_gb": 48.0,
    "free_gb": 40.0,
    "util": 12,
    "temp": 55,
    "power_mw": 120500,
}


def test_a_healthy_device_reports_every_field() -> None:
    answer = nvml_probe.sample_all(FakeNvml({"devices": [DEVICE]}))
    assert answer == {
        "gpus": [
            {
                "index": 0,
                "uuid": "GPU-1",
                "name": "NVIDIA RTX A6000",
                "vram_total_gb": 48.0,
                "vram_free_gb": 40.0,
                "util_pct": 12.0,
                "temp_c": 55.0,
                "power_w": 120.5,
                "health": "ok",
                "health_reasons": [],
                "xid_events": [],
                "throttle_reasons": [],
                "retired_pages": None,
                "retired_pages_pending": None,
                "ecc_uncorrected": None,
            }
        ],
        "errors": [],
    }


def test_unsupported_fields_are_null_quietly_and_failing_ones_noted() -> None:
    device = {**DEVICE, "unsupported": ["util", "power_mw", "memory_v2"], "failing": ["temp"]}
    answer = nvml_probe.sample_all(FakeNvml({"devices": [device]}))
    [gpu] = answer["gpus"]
    assert (gpu["util_pct"], gpu["temp_c"], gpu["power_w"]) == (None, None, None)
    assert gpu["vram_free_gb"] == 40.0  # memory info v1 when v2 is not there
    assert answer["errors"] == ["gpu 0 temp_c: NVML Error with code 999"]


def test_a_lost_device_is_marked_and_the_others_still_report() -> None:
    devices = [DEVICE, {**DEVICE, "lost": True}, {**DEVICE, "free_gb": 1.0}]
    answer = nvml_probe.sample_all(FakeNvml({"devices": devices}))
    assert [g.get("error") for g in answer["gpus"]] == [None, "gpu 1: GPU is lost", None]
    assert [g.get("vram_free_gb") for g in answer["gpus"]] == [40.0, None, 1.0]


def run_main(lines: str, module: str = "fake_nvml", **scenario: Any) -> list[str]:
    fake_nvml._default = FakeNvml(scenario)
    out = io.StringIO()
    try:
        code = nvml_probe.main(["probe", module], io.StringIO(lines), out)
    finally:
        fake_nvml._default = None
    assert code == 0
    return out.getvalue().splitlines()


@pytest.fixture(autouse=True)
def _fake_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "fake_nvml", fake_nvml)


def test_main_says_ready_then_answers_each_sample() -> None:
    lines = run_main("sample\nsample\n", devices=[DEVICE])
    assert lines[0] == '{"ready": true}'
    assert len(lines) == 3
    assert '"vram_free_gb": 40.0' in lines[1]


def test_main_reports_absence_and_exits() -> None:
    lines = run_main("sample\nsample\n", absent=True)
    assert lines[1:] == ['{"absent": "gpu: no NVIDIA driver (NVML Shared Library Not Found)"}']


def test_main_reports_init_errors_and_retries_init() -> None:
    lines = run_main("sample\nexit\n", init_error=999)
    assert lines[1:] == ['{"error": "gpu: NVML Error with code 999"}']


def test_main_reports_a_module_that_cannot_be_imported() -> None:
    lines = run_main("sample\n", module="no_such_nvml_module")
    assert lines[1].startswith('{"absent": "gpu: cannot import no_such_nvml_module')


def test_fake_module_level_calls_use_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(fake_nvml.ENV, '{"devices": [{"name": "X", "total_gb": 1, "free_gb": 1}]}')
    monkeypatch.setattr(fake_nvml, "_default", None)
    fake_nvml.nvmlInit()
    assert fake_nvml.nvmlDeviceGetCount() == 1
    with pytest.raises(AttributeError):
        _ = fake_nvml.not_an_nvml_call
