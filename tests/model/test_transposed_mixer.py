"""The CPU training speed-ups (the transposed 1 x k mixers, channels-last): same numbers, same
exported graph."""

from __future__ import annotations

import io

import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from model.inception_next import MultiScaleMixer  # noqa: E402
from model.registry import create_model  # noqa: E402


def _set(model: torch.nn.Module, on: bool) -> None:
    for module in model.modules():
        if isinstance(module, MultiScaleMixer):
            module.transpose_freq = on


def test_transposed_branches_give_the_same_outputs_and_gradients() -> None:
    torch.manual_seed(0)
    model = create_model("b0", heads={"default": 7}).train()
    x = torch.randn(3, 1, 50, 128)
    results = []
    for on in (False, True):
        _set(model, on)
        model.zero_grad()
        torch.manual_seed(1)  # dropout draws the same mask both times
        out = model(x)["default"]
        out.square().sum().backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        results.append((out.detach(), grads))
    (plain, plain_grads), (fast, fast_grads) = results
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
    for a, b in zip(fast_grads, plain_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_channels_last_gives_the_same_outputs_and_gradients_without_the_trick() -> None:
    """The engine's ``channels_last: true``: the network and input in NHWC, as it sets them."""
    torch.manual_seed(0)
    model = create_model("b0", heads={"default": 7}).train()
    nhwc = create_model("b0", heads={"default": 7}).train()
    nhwc.load_state_dict(model.state_dict())
    nhwc = nhwc.to(memory_format=torch.channels_last)
    x = torch.randn(3, 1, 50, 128)
    results = []
    for net, inputs in ((model, x), (nhwc, x.contiguous(memory_format=torch.channels_last))):
        torch.manual_seed(1)
        out = net(inputs)["default"]
        out.square().sum().backward()
        results.append((out.detach(), [p.grad for p in net.parameters()]))
    (plain, plain_grads), (fast, fast_grads) = results
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
    for a, b in zip(fast_grads, plain_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
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
