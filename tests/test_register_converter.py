"""Converters for new ATen ops from user code (`codesign.frontend.register_converter`), and
unsupported-op errors that point at the user's line (issue 16)."""

from __future__ import annotations

import textwrap

import pytest
import torch

import codesign
from codesign.frontend import UnsupportedOpsError, capture, load_factory, register_converter, unregister_converter
from codesign.frontend.aten import ConverterRegistrationError, tensor_operand


class Hypot(torch.nn.Module):
    """Uses aten.hypot, which codesign has no converter for."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(8, 8)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.hypot(self.fc(x), y) * 2  # the line the error must name


def _hypot(ctx, a, b):
    """hypot(a, b) = sqrt(a*a + b*b), from IR ops."""
    return ctx.add("sqrt", [ctx.add("add", [ctx.add("mul", [a, a]), ctx.add("mul", [b, b])])])


def test_without_a_converter_the_error_names_the_users_line_and_register_converter() -> None:
    x, y = torch.randn(4, 8), torch.randn(4, 8)
    with pytest.raises(UnsupportedOpsError) as info:
        capture(Hypot().eval(), (x, y))
    message = str(info.value)
    assert f"{__file__}:" in message and "aten.hypot.default" in message
    line = int(message.split(f"{__file__}:")[1].split()[0].rstrip(":"))
    assert "torch.hypot" in open(__file__).read().splitlines()[line - 1]
    assert 'register_converter("aten.hypot", fn)' in message and "codesign/frontend/aten.py" not in message


def test_a_registered_converter_compiles_the_op_and_matches_eager() -> None:
    register_converter("aten.hypot", _hypot)
    try:
        model = Hypot().eval()
        x, y = torch.randn(4, 8), torch.randn(4, 8)
        cm = codesign.compile(model, (x, y), target="cpu-host")
        x2, y2 = torch.randn(4, 8), torch.randn(4, 8)
        with torch.no_grad():
            want = model(x2, y2)
        got = cm(x2, y2)  # generated C++
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)
        assert "sqrt" in {n.op for n in cm.graph.nodes}
    finally:
        unregister_converter("aten.hypot")
    with pytest.raises(UnsupportedOpsError):  # gone again
        capture(Hypot().eval(), (torch.randn(4, 8), torch.randn(4, 8)))


def test_register_converter_as_a_decorator_with_a_scalar_operand() -> None:
    @register_converter(torch.ops.aten.expm1)
    def expm1(ctx, x):
        return ctx.add("sub", [ctx.add("exp", [x]), tensor_operand(ctx, 1.0, ctx.out.dtype)])

    class M(torch.nn.Module):
        def forward(self, x):
            return torch.expm1(x)

    try:
        x = torch.randn(3, 5)
        cm = codesign.compile(M(), (x,), target="cpu-host", backend="interpreter")
        assert torch.allclose(cm(x), torch.expm1(x), rtol=1e-5, atol=1e-6)
    finally:
        unregister_converter("aten.expm1")


def test_register_converter_refuses_what_it_cannot_do() -> None:
    with pytest.raises(ConverterRegistrationError, match="torch has no ATen op 'aten.hypott'.*aten.hypot"):
        register_converter("aten.hypott", _hypot)
    with pytest.raises(ConverterRegistrationError, match="already converts aten.relu; pass replace=True"):
        register_converter("aten.relu", _hypot)
    with pytest.raises(ConverterRegistrationError, match="no overload 'nope'"):
        register_converter("aten.hypot.nope", _hypot)
    with pytest.raises(ConverterRegistrationError, match="no converter registered from user code"):
        unregister_converter("aten.relu")  # built-in: stays


def test_the_users_line_is_found_even_under_a_folder_named_torch(tmp_path) -> None:
    """Frames are told apart by where torch is installed, not by `/torch/` in a path."""
    folder = tmp_path / "torch" / "project"
    folder.mkdir(parents=True)
    source = folder / "model.py"
    source.write_text(textwrap.dedent("""
        import torch

        class M(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.pool = torch.nn.AdaptiveMaxPool2d(2)

            def forward(self, x):
                return self.pool(x) + 1

        def make():
            return M().eval(), (torch.randn(1, 2, 6, 6),)
        """))
    model, inputs = load_factory(f"{source}:make")
    with pytest.raises(UnsupportedOpsError) as info:
        capture(model, inputs)
    assert f"{source}:10" in str(info.value) and "torch/nn/modules" not in str(info.value)
