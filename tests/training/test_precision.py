"""Mixed precision on CPU: bf16 only where the CPU has it in hardware (emulated, it is slower)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from arinext.training.engine import autocast_dtype, native_cpu_bf16

CPU = torch.device("cpu")


def _cpu_has(monkeypatch: pytest.MonkeyPatch, *, amx: bool, avx512_bf16: bool) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)


@pytest.mark.parametrize(("amx", "avx512_bf16"), [(True, False), (False, True)])
def test_bf16_on_a_cpu_with_bf16_hardware(
    monkeypatch: pytest.MonkeyPatch, amx: bool, avx512_bf16: bool
) -> None:
    _cpu_has(monkeypatch, amx=amx, avx512_bf16=avx512_bf16)
    assert native_cpu_bf16()
    assert autocast_dtype("bf16", CPU) is torch.bfloat16


def test_bf16_without_the_hardware_trains_in_float32_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _cpu_has(monkeypatch, amx=False, avx512_bf16=False)
    assert not native_cpu_bf16()
    with caplog.at_level(logging.WARNING, logger="arinext.training.engine"):
        assert autocast_dtype("bf16", CPU) is None
    assert "no AMX or AVX512-BF16" in caplog.text and "training in float32" in caplog.text


@pytest.mark.parametrize("amp", ["auto", "none", "fp16"])
def test_other_settings_train_in_float32_on_cpu(monkeypatch: pytest.MonkeyPatch, amp: str) -> None:
    _cpu_has(monkeypatch, amx=True, avx512_bf16=True)
    assert autocast_dtype(amp, CPU) is None


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="needs Linux /proc/cpuinfo")
def test_the_check_agrees_with_the_cpu_flags_the_kernel_reports() -> None:
    flags: set[str] = set()
    for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    if "avx512_bf16" in flags:
        assert native_cpu_bf16()
    if not flags & {"avx512_bf16", "amx_bf16", "amx_tile"}:
        assert not native_cpu_bf16()
