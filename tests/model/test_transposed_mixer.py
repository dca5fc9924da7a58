"""The CPU training speed-up of the 1 x k mixers: same numbers, same exported graph."""

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


def test_freq_mixer_uses_the_trick_only_outside_export() -> None:
    mixer = MultiScaleMixer(8, axis="freq").eval()
    assert mixer._can_transpose()
    buffer = io.BytesIO()
    torch.onnx.export(mixer, (torch.randn(1, 8, 20, 32),), buffer, dynamo=False)
    ops = {node.op_type for node in onnx.load_from_string(buffer.getvalue()).graph.node}
    assert "Transpose" not in ops and "Conv" in ops
