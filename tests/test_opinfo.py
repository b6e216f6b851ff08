"""Differential tests against PyTorch's own OpInfo samples (tests/opinfo_harness.py says how).

Every sample of an OpInfo is compiled for cpu-host, run through the generated C++ and
compared with eager: it must match, or be refused with one of codesign's own errors; a
MISMATCH or a CRASH fails the test, unless `KNOWN_FAILURES` names that sample with the bug.

- `test_opinfo_fast` (the default run): `FAST` — a spread of supported ops, two samples
  each (a few with chosen edge samples), small shapes, one C++ build per op.
- `test_opinfo_triton_fast`: a smaller spread through the Triton backend (h200) under
  TRITON_INTERPRET=1, at smaller shapes still.
- `test_opinfo_full` (marker `opinfo_full`, deselected by default): every OpInfo of
  `op_db`, every sample, in f32, and in int64 / bool where the OpInfo lists them:
  `python -m pytest tests/test_opinfo.py -m opinfo_full -n 2`.
"""

from __future__ import annotations

import pytest

pytest.importorskip("expecttest")  # torch.testing._internal (the OpInfo database) imports it

from opinfo_harness import CRASH, DTYPES, REFUSED, Outcome, run_op  # noqa: E402

FAST_MAX_NUMEL = 1024
"""Fast samples are small: a sample with a larger tensor is passed over."""

FAST: dict[tuple[str, str], tuple[int, ...]] = {
    # (op, dtype): sample indices (among all of the op's samples; larger ones are passed over)
    **{(op, "f32"): (0, 1) for op in (
        "add", "mul", "div.floor_rounding", "pow", "where", "clamp", "exp", "log", "sigmoid", "tanh",
        "nn.functional.gelu", "nn.functional.silu", "logaddexp", "softmax", "sum", "mean", "amax",
        "argmax", "cumsum", "mm", "matmul", "addmm", "nn.functional.linear", "linalg.multi_dot",
        "nn.functional.layer_norm", "nn.functional.conv2d", "nn.functional.max_pool2d", "cat",
        "permute", "reshape", "nn.functional.pad.constant", "index_select", "nn.functional.embedding",
        "nn.functional.unfold")},
    ("nn.functional.scaled_dot_product_attention", "f32"): (0, 4, 8),  # causal (q shorter), plain, 4-d
    ("nn.functional.avg_pool2d", "f32"): (6,),  # the others set divisor_override (refused)
    ("var.unbiased", "f32"): (0, 1, 2, 3),  # 2, 3: empty inputs (eager: nan)
    ("std.unbiased", "f32"): (0, 1, 2, 3),
    ("repeat", "f32"): (0, 2, 10, 11),  # 2, 10: empty results
    ("arange", "f32"): (0, 6),  # 6: bool bounds
    ("arange", "i64"): (15, 18),  # float bounds, integer result: eager truncates start and step first
    ("linspace", "f32"): (0, 32, 60),
    ("nn.functional.local_response_norm", "i64"): (0, 7),  # an integer avg pool over a padded product
    **{(op, "i64"): (0, 1) for op in ("add", "mul", "sum", "cumsum", "eq")},
    **{(op, "b8"): (0, 1) for op in ("logical_and", "logical_not", "any", "where")},
}

KNOWN_FAILURES: dict[tuple[str, str, int], str] = {
    # (op, dtype, sample index; -1: the op's samples compiled together): the bug
}


def check(op_name: str, dtype: str, samples: tuple[int, ...] | None = None, max_numel: int | None = None,
          backend: str = "cpp") -> None:
    from opinfo_harness import op_db
    run = run_op(op_name, op_db()[op_name], dtype, indices=samples, max_numel=max_numel, backend=backend)
    unknown: list[Outcome] = []
    known: list[str] = []
    for o in run.failures():
        reason = KNOWN_FAILURES.get((op_name, dtype, o.sample))
        (known.append(f"#{o.sample}: {reason}") if reason else unknown.append(o))
    if unknown:
        pytest.fail(f"{len(unknown)} of {len(run.outcomes)} samples of {op_name} ({dtype}, {backend}) fail:\n"
                    + "\n".join(o.line() for o in unknown), pytrace=False)
    if known:
        pytest.xfail("known: " + "; ".join(known))
    if samples is not None and all(o.outcome == REFUSED for o in run.outcomes):
        pytest.fail(f"every fast sample of {op_name} ({dtype}) is refused: choose a supported op for the "
                    "fast subset\n" + "\n".join(o.line() for o in run.outcomes), pytrace=False)


@pytest.mark.parametrize("op_name,dtype", sorted(FAST), ids=lambda v: v)
def test_opinfo_fast(op_name: str, dtype: str):
    """A spread of supported ops on a few small OpInfo samples matches eager."""
    check(op_name, dtype, FAST[(op_name, dtype)], FAST_MAX_NUMEL)


TRITON_FAST: dict[tuple[str, str], tuple[int, ...]] = {
    # (op, dtype): sample indices, through the Triton backend under the interpreter (small shapes)
    **{(op, "f32"): (0, 1) for op in (
        "add", "mul", "div.floor_rounding", "where", "clamp", "exp", "log", "sigmoid",
        "nn.functional.gelu", "nn.functional.silu", "softmax", "sum", "mean", "amax", "mm", "addmm",
        "nn.functional.linear", "nn.functional.layer_norm", "cat", "permute", "index_select",
        "nn.functional.embedding", "nn.functional.pad.constant")},
    ("nn.functional.scaled_dot_product_attention", "f32"): (0, 4),
    **{(op, "i64"): (0, 1) for op in ("add", "sum")},
    ("logical_and", "b8"): (0, 1),
}
TRITON_MAX_NUMEL = 256
"""Triton samples run in the interpreter (numpy per program): smaller still than the fast set."""


@pytest.mark.parametrize("op_name,dtype", sorted(TRITON_FAST), ids=lambda v: v)
def test_opinfo_triton_fast(op_name: str, dtype: str):
    """The same samples through the Triton backend (h200, TRITON_INTERPRET=1) match eager."""
    check(op_name, dtype, TRITON_FAST[(op_name, dtype)], TRITON_MAX_NUMEL, backend="triton")


def _full_selected(config) -> bool:
    """Whether `-m` can select `opinfo_full` tests (else op_db is not even imported)."""
    from _pytest.mark.expression import Expression
    expr = config.getoption("markexpr") or ""
    if not expr.strip():
        return True
    return Expression.compile(expr).evaluate(lambda name, **_: name == "opinfo_full")


def pytest_generate_tests(metafunc):
    if metafunc.function.__name__ != "test_opinfo_full":
        return
    params = []
    if _full_selected(metafunc.config):
        from opinfo_harness import op_db
        for name, op in sorted(op_db().items()):
            have = op.supported_dtypes("cpu")
            params += [(name, dt) for dt, torch_dtype in DTYPES.items() if torch_dtype in have]
    metafunc.parametrize("op_name,dtype", params, ids=[f"{n}-{d}" for n, d in params])


@pytest.mark.opinfo_full
def test_opinfo_full(op_name: str, dtype: str):
    """Every sample of every OpInfo matches eager or is refused clearly."""
    check(op_name, dtype)


def test_integer_linspace_is_refused():
    """Eager computes an integer linspace in double and truncates; torch's decomposition does it
    in float32 and truncates differently (7 of 50 values of linspace(4.3, -3, 50)): refused."""
    import torch
    import codesign
    from codesign.frontend.capture import CaptureError

    class Linspace(torch.nn.Module):
        def forward(self, x):
            return x + torch.linspace(4.3, -3, 50, dtype=torch.int64)
    with pytest.raises(CaptureError, match="linspace with an integer dtype"):
        codesign.compile(Linspace(), (torch.zeros(50, dtype=torch.int64),), target="cpu-host")


def test_harness_classifies():
    """The harness itself: codesign's errors are refusals, anything else a crash; a wrong
    value, dtype or shape is a mismatch; NaN matches NaN."""
    import torch
    from codesign.frontend.aten import ConversionError
    from opinfo_harness import classify, compare
    assert classify(ConversionError("no"))[0] == REFUSED
    assert classify(ConversionError(""))[0] == CRASH  # a refusal says why
    assert classify(KeyError("x"))[0] == CRASH
    from codesign.codegen import CodegenError
    unparsable = CodegenError("the generated wrapper does not load")
    unparsable.__cause__ = SyntaxError("invalid decimal literal")
    assert classify(unparsable)[0] == CRASH  # generated code that does not parse is a bug
    assert classify(CodegenError("no template for this op"))[0] == REFUSED
    x = torch.tensor([1.0, float("nan")])
    assert compare(x.clone(), x) == ""
    assert compare(x + 1e-3, x) and compare(x.double(), x) and compare(x[:1], x)
    assert compare(torch.tensor([1, 2]), torch.tensor([1, 3]))


def test_float32_conditioning_forgives_rounding_not_a_wrong_formula():
    """sin(x * 1e4) in float32 is off by ~1e-3 from the exact result (the product rounds):
    beyond the f32 tolerance, yet within what rounding the inputs moves; cos is not."""
    import torch
    from torch.testing._internal.opinfo.core import SampleInput
    from opinfo_harness import compare, make_case, within_conditioning

    def fn(x):
        return torch.sin(x * 1e4)

    case = make_case(0, SampleInput(torch.linspace(1, 2, 64)))
    rounded = fn(case.tensors[0])
    exact = fn(case.tensors[0].double()).float()
    assert compare(rounded, exact)  # the plain tolerance calls it a mismatch
    assert within_conditioning(fn, case, [rounded]) == ""
    assert within_conditioning(fn, case, [exact]) == ""
    assert "beyond float32 conditioning" in within_conditioning(fn, case, [torch.cos(case.tensors[0] * 1e4)])

    def float32_only(x):
        if x.dtype != torch.float32:
            raise TypeError("float32 only")
        return fn(x)

    assert "no float64 reference" in within_conditioning(float32_only, case, [rounded])
