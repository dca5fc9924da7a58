"""The CPU training speed-ups (the transposed 1 x k mixers, channels-last): same numbers, same
exported graph."""

from __future__ import annotations

import io

import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from arinext.model.inception_next import MultiScaleMixer  # noqa: E402
from arinext.model.registry import create_model  # noqa: E402


def _set(model: torch.nn.Module, on: bool) -> None:
    for module in model.modules():
        if isinstance(module, MultiScaleMixer):
            module.transpose_freq = on


def _step(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One training step's output and parameter gradients."""
    model.zero_grad()
    torch.manual_seed(1)  # dropout draws the same mask every time
    out = model(x)["default"]
    out.square().sum().backward()
    return out.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


def _assert_same_step(
    fast: tuple[torch.Tensor, list[torch.Tensor]], plain: tuple[torch.Tensor, list[torch.Tensor]]
) -> None:
    torch.testing.assert_close(fast[0], plain[0], rtol=1e-5, atol=1e-5)
    for a, b in zip(fast[1], plain[1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_transposed_branches_give_the_same_outputs_and_gradients() -> None:
    torch.manual_seed(0)
    model = create_model("b0", heads={"default": 7}).train()
    x = torch.randn(3, 1, 50, 128)
    _set(model, False)
    plain = _step(model, x)
    _set(model, True)
    _assert_same_step(_step(model, x), plain)


def test_channels_last_gives_the_same_outputs_and_gradients_without_the_trick() -> None:
    """The engine's ``channels_last: true``: the network and input in NHWC, as it sets them."""
    torch.manual_seed(0)
    model = create_model("b0", heads={"default": 7}).train()
    nhwc = create_model("b0", heads={"default": 7}).train()
    nhwc.load_state_dict(model.state_dict())
    nhwc = nhwc.to(memory_format=torch.channels_last)
    x = torch.randn(3, 1, 50, 128)
    plain = _step(model, x)
    _assert_same_step(_step(nhwc, x.contiguous(memory_format=torch.channels_last)), plain)
    mixer = next(m for m in nhwc.modules() if isinstance(m, MultiScaleMixer) and m.axis == "freq")
    y = torch.randn(2, mixer.channels, 6, 16).contiguous(memory_format=torch.channels_last)
    assert not mixer._can_transpose(y) and mixer._can_transpose(y.contiguous())


def test_freq_mixer_uses_the_trick_only_outside_export() -> None:
    mixer = MultiScaleMixer(8, axis="freq").eval()
    assert mixer._can_transpose(torch.randn(1, 8, 20, 32))
    buffer = io.BytesIO()
    torch.onnx.export(mixer, (torch.randn(1, 8, 20, 32),), buffer, dynamo=False)
    ops = {node.op_type for node in onnx.load_from_string(buffer.getvalue()).graph.node}
    assert "Transpose" not in ops and "Conv" in ops


@pytest.mark.parametrize("axis", ["time", "freq"])
@pytest.mark.parametrize("merged", [False, True])
def test_mixers_compute_in_float32_under_cpu_bf16_autocast(axis: str, merged: bool) -> None:
    """Under ``amp: bf16`` the mixers run exactly their float32 forward (faster on CPU), and
    gradients reach every weight; with the switch off their convs run in bf16."""
    torch.manual_seed(0)
    mixer = MultiScaleMixer(8, axis=axis).train()  # type: ignore[arg-type]
    if merged:
        mixer.eval().merge_branches()
    x = torch.randn(2, 8, 12, 16, requires_grad=True)
    exact = mixer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = mixer(x)
        fast.sum().backward()
        mixer.float32_on_cpu = False
        slow = mixer(x)
    torch.testing.assert_close(fast, exact, rtol=0, atol=0)
    assert (slow.float() - exact).abs().max() > 1e-4  # the bf16 convs' rounding
    assert x.grad is not None and x.grad.dtype == torch.float32
    assert all(p.grad is not None for p in mixer.parameters())
