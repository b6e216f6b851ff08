"""Random programs over the IR's ops against eager (tests/random_programs.py draws them,
tests/random_programs_harness.py runs them).

- `test_random_programs_fast` (the default run): programs 0..99 through capture, the
  reference interpreter on the compiled graph and the generated C++, in chunks of 20 (one
  capture and one build a chunk), and `TRITON_FAST` small programs through Triton under
  TRITON_INTERPRET=1.
- `test_random_programs_full` (marker `random_programs_full`, deselected by default):
  programs 0..999, and every tenth through Triton:
  `python -m pytest tests/test_random_programs.py -m random_programs_full -n 2`.

Every program must match eager or be refused with one of codesign's errors; a MISMATCH or
a CRASH fails the test with the program's source. Bugs the generator found are pinned
below by minimal regression tests.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported anywhere

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import codesign  # noqa: E402
from random_programs import FUNCTIONS, random_program  # noqa: E402
from random_programs_harness import CRASH, MATCH, MISMATCH, REFUSED, compare, sweep  # noqa: E402

FAST_COUNT, FAST_CHUNK = 100, 20
FULL_COUNT, FULL_CHUNK = 1000, 50
TRITON_FAST = 4


def check(seeds: range, backends=("interpreter", "cpp"), triton_every: int = 0) -> None:
    result = sweep(seeds, batch=len(seeds), backends=backends, triton_every=triton_every)
    failures = result.failures()
    if failures:
        sources = {(o.seed, o.backend == "triton"): o.program.source() for o in failures}
        pytest.fail(f"{len(failures)} failures over programs {seeds.start}..{seeds.stop - 1} "
                    f"({result.counts()}):\n" + "\n".join(o.line() for o in failures) + "\n\n"
                    + "\n\n".join(sources.values()), pytrace=False)
    assert result.counts()[MATCH] > 0, result.counts()  # a chunk of refusals tests nothing


@pytest.mark.parametrize("first", range(0, FAST_COUNT, FAST_CHUNK))
def test_random_programs_fast(first: int):
    """Programs first..first+19 match eager (interpreter and C++) or are refused clearly."""
    check(range(first, first + FAST_CHUNK))


def test_random_programs_triton_fast():
    """A few small programs through Triton (the interpreter is slow) match eager."""
    pytest.importorskip("triton")
    result = sweep(range(TRITON_FAST), batch=TRITON_FAST, backends=(), triton_every=1)
    assert not result.failures(), "\n".join(o.line() for o in result.failures())
    assert result.counts()[MATCH] > 0


@pytest.mark.random_programs_full
@pytest.mark.parametrize("first", range(0, FULL_COUNT, FULL_CHUNK))
def test_random_programs_full(first: int):
    """1,000 programs (interpreter and C++; every tenth through Triton too)."""
    check(range(first, first + FULL_CHUNK), triton_every=10)


# -- the generator and the harness --------------------------------------------------------------
def test_programs_are_seeded_well_typed_and_cover_every_function():
    """The same seed draws the same program; every program runs in eager on fresh inputs;
    over 1,000 seeds every function of the generator is drawn."""
    assert random_program(7).source() == random_program(7).source()
    assert random_program(7).source() != random_program(8).source()
    drawn = set()
    for seed in range(1000):
        program = random_program(seed)
        drawn |= {step.function for step in program.steps}
        if seed < 40:
            with torch.no_grad():
                outs = program.module()(*program.draw_inputs(seed))
            assert len(outs) == len(program.outputs)
    assert drawn == set(FUNCTIONS), set(FUNCTIONS) - drawn


def test_harness_compare_and_classify():
    """A wrong value, dtype, shape or NaN place is a mismatch; codesign's errors are refusals,
    anything else a crash."""
    from codesign.frontend.aten import ConversionError
    from opinfo_harness import classify
    x = torch.tensor([1.0, float("nan"), float("inf")])
    assert compare(x.clone(), x) == ""
    assert compare(x + torch.tensor([1e-7, 0, 0]), x) == ""  # within the tolerance
    assert compare(x + torch.tensor([1e-2, 0, 0]), x)
    assert compare(torch.tensor([1.0, 0.0, float("inf")]), x)  # NaN lost
    assert compare(x.double(), x) and compare(x[:2], x)
    assert compare(torch.tensor([1, 2]), torch.tensor([1, 3]))
    assert classify(ConversionError("no"))[0] == REFUSED
    assert classify(IndexError("deep inside"))[0] == CRASH
    assert MISMATCH != MATCH


# -- regressions the generator found ---------------------------------------------------------
def _through_backends(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], fresh: tuple[torch.Tensor, ...],
                      tol: float) -> None:
    """`module` compiled for cpu-host, run on `fresh` inputs by the interpreter and the C++,
    equals eager to a relative error of `tol`."""
    want = module(*fresh)
    for backend in ("interpreter", "cpp"):
        got = codesign.compile(module, inputs, target="cpu-host", backend=backend)(*fresh)
        assert got.dtype == want.dtype
        err = ((got - want).abs().max() / want.abs().max()).item()
        assert err <= tol, (backend, err)


class _Attention(torch.nn.Module):
    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v)


def test_float64_attention_keeps_float64():
    """The attention reference ran its softmax in f32 and the C++ flash kernel kept scores,
    softmax state and accumulator in float: an f64 attention was off by 1e-7 (seed 70)."""
    gen = torch.Generator().manual_seed(0)
    make = lambda: tuple(torch.randn(2, 6, 5, generator=gen, dtype=torch.float64) * 3 for _ in range(3))  # noqa: E731
    _through_backends(_Attention(), make(), make(), tol=1e-12)


class _OnceRefused(torch.nn.Module):
    def forward(self, x):
        return F.leaky_relu(x, 0.2), F.leaky_relu(x), torch.remainder(x, 1.5), torch.remainder(x, -0.75)


def test_leaky_relu_and_remainder_by_a_scalar_match_eager():
    """Both were refused (leaky_relu had no converter; `remainder(x, 1.5)` decomposed to
    fmod, which no op models): the most common refusals of the first 1,000 programs."""
    x = torch.randn(3, 5, 6)
    fresh = torch.randn(3, 5, 6)
    fresh[0, 0, :3] = torch.tensor([0.0, -0.0, float("nan")])
    want = _OnceRefused()(fresh)
    for backend in ("interpreter", "cpp"):
        got = codesign.compile(_OnceRefused(), (x,), target="cpu-host", backend=backend)(fresh)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-6, equal_nan=True)
            assert torch.equal(torch.signbit(g), torch.signbit(w))


class _MaskedAttention(torch.nn.Module):
    def forward(self, q, k, v, mask):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class _EagerMaskedAttention(torch.nn.Module):
    """Eager attention code: where(mask, scores, fill) then softmax; `const` masks: a
    constant one that leaves every row a key (0) or not (-1)."""

    def __init__(self, fill: float, const: int | None = None):
        super().__init__()
        self.fill, self.const = fill, const

    def forward(self, q, k, v, mask):
        if self.const is not None:
            mask = torch.ones(mask.shape, dtype=torch.bool).tril(self.const)
        return torch.softmax(torch.where(mask, q @ k.transpose(-1, -2) * 0.5, self.fill), -1) @ v


def _qkv_mask(seed: int, float_mask: bool = False):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(1, 2, length, 4, generator=gen) for length in (3, 5, 5))
    mask = torch.rand(3, 5, generator=gen) > 0.3
    mask[1] = False  # query row 1 attends to no key
    if float_mask:
        mask = torch.zeros(3, 5).masked_fill(~mask, float("-inf"))
    return q, k, v, mask


@pytest.mark.parametrize("float_mask", [False, True], ids=["bool", "float"])
def test_sdpa_row_with_every_key_masked_is_zero(float_mask):
    """SDPA gives 0 for a query row whose every key is masked (`_safe_softmax`); the op's
    reference, the C++ and Triton kernels and the MLIR export gave NaN (found by the random
    programs)."""
    inputs, fresh = _qkv_mask(0, float_mask), _qkv_mask(1, float_mask)
    want = _MaskedAttention()(*fresh)
    assert torch.equal(want[0, :, 1], torch.zeros(2, 4))
    backends = [("interpreter", "cpu-host"), ("cpp", "cpu-host")]
    import importlib.util
    backends += [(name, target) for name, target, module in (("triton", "h200", "triton"), ("iree", "cpu-host", "iree"))
                 if importlib.util.find_spec(module) is not None]
    for backend, target in backends:
        got = codesign.compile(_MaskedAttention(), inputs, target=target, backend=backend)(*fresh)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=backend)


@pytest.mark.parametrize("fill", [float("-inf"), torch.finfo(torch.float32).min], ids=["-inf", "finite"])
@pytest.mark.parametrize("const, fused", [(None, False), (2, True), (-1, False)],
                         ids=["runtime-mask", "constant-mask", "constant-mask-empty-row"])
def test_eager_masked_attention_is_fused_only_when_no_row_is_fully_masked(fill, const, fused):
    """Eager's softmax gives NaN (a finite fill: the mean of v) on a row with every key
    masked, the attention op 0: the pattern becomes the op only under a constant mask that
    leaves every row a key; otherwise it stays as written and matches eager."""
    from collections import Counter
    model = _EagerMaskedAttention(fill, const)
    inputs, fresh = _qkv_mask(2), _qkv_mask(3)
    captured = codesign.capture(model, inputs)
    assert (Counter(n.op for n in captured.graph.nodes)["attention"] == 1) == fused
    want = model(*fresh)
    got = codesign.compile(captured, target="cpu-host", backend="cpp")(*fresh)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, equal_nan=True)


class _TritonFound(torch.nn.Module):
    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.w = torch.nn.Parameter(torch.randn(3, 4, generator=gen), requires_grad=False)
        self.v = torch.nn.Parameter(torch.randn(4, generator=gen), requires_grad=False)

    def forward(self, x, h):
        return (F.linear(torch.tanh(x), self.w),  # a linear of a 1-d input
                torch.exp(x) @ self.v,  # a 0-d GEMM result
                h + torch.arange(h.shape[-1], dtype=h.dtype))  # a bf16 iota


def test_triton_kernels_the_random_programs_broke():
    """Three Triton bugs the random programs found: a linear of a 1-d input crashed in the
    GEMM template (no m dim); a 0-d GEMM result was stored by every lane of the tile, the
    padding lanes' 0 last; a bf16 iota was cast from f64 directly, which Triton's interpreter
    gets wrong (now through f32, as torch rounds)."""
    pytest.importorskip("triton")
    gen = torch.Generator().manual_seed(1)
    make = lambda: (torch.randn(4, generator=gen), torch.randn(2, 3, 4, generator=gen).bfloat16())  # noqa: E731
    inputs, fresh = make(), make()
    want = _TritonFound()(*fresh)
    got = codesign.compile(_TritonFound(), inputs, target="h200", backend="triton")(*fresh)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)  # bf16: one rounding step (the interpreter truncates)


def test_triton_casts_a_literal_in_valid_python():
    """Programs 550 and 859 cast an integer literal in a Triton kernel: the text was
    `0.to(tl.float64)`, which does not parse, so the wrapper did not load and the programs
    were refused; now both match eager through Triton."""
    pytest.importorskip("triton")
    for seed in (550, 859):
        result = sweep(range(seed, seed + 1), batch=1, backends=(), triton_every=1)
        assert result.counts()[MATCH] == 1, "\n".join(o.line() for o in result.outcomes)
