"""Generated C++ computes what eager computes or raises as eager does: out-of-range gather
indices raise IndexError (never a garbage read or a segfault), integer division by zero
raises `RuntimeError: ZeroDivisionError` (never SIGFPE), INT_MIN // -1 wraps as torch's
does; `check_indices=False` runs unchecked. (The Triton side: tests/test_codegen_triton.py.)
"""

from __future__ import annotations

import os

import pytest
import torch

import codesign
from codesign.codegen.cpp import CppModule
from codesign.ir import parse_graph, run_graph


@pytest.fixture(autouse=True, scope="module")
def _private_cache(tmp_path_factory):
    if "CODESIGN_CACHE_DIR" in os.environ:
        yield
        return
    os.environ["CODESIGN_CACHE_DIR"] = str(tmp_path_factory.getbasetemp() / "safety-cache")
    yield
    os.environ.pop("CODESIGN_CACHE_DIR", None)


GATHERS = """graph @gathers(%table: f32[10,3] param, %ids: i64[4], %x: f32[5,3], %sel: i64[2], %col: i64[2])
    -> (f32[4,3], f32[2,3], f32[2,3], f32[5,2]) {
  %e = embedding(%table, %ids) : f32[4,3]
  %s = index_select(%x, %sel) {dim = 0} : f32[2,3]
  %i = index(%x, %sel) {dim = 0} : f32[2,3]
  %c = index(%x, %col) {dim = 1} : f32[5,2]
  return %e, %s, %i, %c
}
"""
TABLE, X = torch.randn(10, 3), torch.randn(5, 3)


@pytest.fixture(scope="module")
def gathers() -> CppModule:
    return CppModule(parse_graph(GATHERS), {"table": TABLE})


def _kernels(module) -> str:
    """The generated kernels (without the runtime prelude)."""
    return module.source[module.source.index("// ---- kernels"):]


def _run(module, ids=(0, 9, 3, 2), sel=(4, 1), col=(0, 2)):
    return module(torch.tensor(ids), X, torch.tensor(sel), torch.tensor(col))


def test_valid_indices_match_eager(gathers):
    e, s, i, c = _run(gathers, sel=(4, 0), col=(-1, 2))
    assert torch.equal(e, TABLE[[0, 9, 3, 2]])
    assert torch.equal(s, X.index_select(0, torch.tensor([4, 0])))
    assert torch.equal(i, X[torch.tensor([4, 0])])
    assert torch.equal(c, X[:, torch.tensor([-1, 2])])  # index wraps a negative index, as torch does
    c2 = _run(gathers, col=(-3, 0))[3]
    assert torch.equal(c2, X[:, torch.tensor([-3, 0])])
    assert _kernels(gathers).count("// index check:") == 4  # one pass over each index operand


@pytest.mark.parametrize("kwargs, op, value, valid", [
    ({"ids": (0, 10, 1, 1)}, "embedding", 10, "0 to 9"),           # one past the end
    ({"ids": (-1, 0, 0, 0)}, "embedding", -1, "0 to 9"),           # torch does not wrap embedding ids
    ({"ids": (10 ** 12, 0, 0, 0)}, "embedding", 10 ** 12, "0 to 9"),  # far outside: a segfault unchecked
    ({"sel": (7, 0)}, "index_select", 7, "0 to 4"),
    ({"sel": (-1, 0), "col": (0, 0)}, "index_select", -1, "0 to 4"),  # nor does index_select
    ({"col": (3, 0)}, "index", 3, "-3 to 2"),                        # index: too large
    ({"col": (-4, 0)}, "index", -4, "-3 to 2"),                      # index: too negative (no wrap left)
])
def test_out_of_range_index_raises_index_error(gathers, kwargs, op, value, valid):
    with pytest.raises(IndexError, match=rf"index {value} is out of range .* = {op}\(.*valid indices are {valid}"):
        _run(gathers, **kwargs)
    _run(gathers)  # the module still runs after a failed call (the error state is reset)


def test_index_on_a_leading_dim_too_large_and_too_negative():
    g = parse_graph("""graph @idx(%x: f32[5,3], %i: i64[2]) -> (f32[2,3]) {
  %y = index(%x, %i) {dim = 0} : f32[2,3]
  return %y
}""")
    m = CppModule(g, {})
    for bad in (5, -6):
        with pytest.raises(IndexError, match=f"index {bad} is out of range"):
            m(X, torch.tensor([0, bad]))


def test_gather_inlined_into_a_fused_parallel_loop_is_checked():
    """An embedding inlined into a pointwise group and a reduction, run by OpenMP threads
    (large enough to go parallel): a bad id in any thread raises; good ids match eager."""
    g = parse_graph("""graph @fused(%table: f32[300,1024] param, %ids: i64[8,64], %y: f32[8,64,1024])
    -> (f32[8,64,1024], f32[8,64]) {
  group 0 {anchor = "o", kind = "pointwise"}
  %e = embedding(%table, %ids) : f32[8,64,1024] group(0)
  %o = add(%e, %y) : f32[8,64,1024] group(0)
  %s = sum(%e) {dims = [2]} : f32[8,64]
  return %o, %s
}""")
    table = torch.randn(300, 1024)
    m = CppModule(g, {"table": table})
    ids, y = torch.randint(0, 300, (8, 64)), torch.randn(8, 64, 1024)
    o, s = m(ids, y)
    want_o, want_s = run_graph(g, [ids, y], {"table": table})
    assert torch.equal(o, want_o)
    torch.testing.assert_close(s, want_s, rtol=1e-4, atol=1e-4)  # the sum is accumulated in another order
    ids[5, 33] = 300
    with pytest.raises(IndexError, match="index 300 is out of range"):
        m(ids, y)


def test_indices_computed_in_the_kernel_are_checked():
    """An index computed by an inlined node is checked by the pass before the loops (through
    that node); one written by the kernel itself (an argmax) where it is read (`cs_index`)."""
    g = parse_graph("""graph @computed(%table: f32[6,4] param, %ids: i64[3], %off: i64[], %x: f32[3,8])
    -> (f32[3,4], f32[3,4]) {
  group 0 {anchor = "e", kind = "pointwise"}
  group 1 {anchor = "k", kind = "reduce"}
  %j = add(%ids, %off) : i64[3] group(0)
  %e = embedding(%table, %j) : f32[3,4] group(0)
  %k = argmax(%x) {dim = 1} : i64[3] group(1)
  %f = embedding(%table, %k) : f32[3,4] group(1)
  return %e, %f
}""")
    table = torch.randn(6, 4)
    m = CppModule(g, {"table": table})
    src = _kernels(m)
    assert src.count("// index check:") == 1 and src.count("cs_index(") == 1
    x = torch.zeros(3, 8)
    x[0, 5], x[1, 2], x[2, 3] = 1.0, 1.0, 1.0
    ids, off = torch.tensor([0, 2, 4]), torch.tensor(1)
    e, f = m(ids, off, x)
    assert torch.equal(e, table[ids + 1]) and torch.equal(f, table[[5, 2, 3]])
    with pytest.raises(IndexError, match="index 6 is out of range .* %e = embedding"):
        m(ids, torch.tensor(2), x)
    x[2, 7] = 2.0
    with pytest.raises(IndexError, match="index 7 is out of range .* %f = embedding"):
        m(ids, off, x)


def test_checks_off_runs_unchecked():
    """`check_indices=False`: no comparisons in the code, valid indices still match eager
    (an out-of-range one is then undefined, as documented, so none is tried here)."""
    m = CppModule(parse_graph(GATHERS), {"table": TABLE}, check_indices=False)
    assert "index check" not in _kernels(m) and "cs_index(" not in _kernels(m) and "NOT checked" in m.source
    e, s, i, c = _run(m)
    assert torch.equal(e, TABLE[[0, 9, 3, 2]]) and torch.equal(c, X[:, torch.tensor([0, 2])])


# -- integer division ------------------------------------------------------------------------------
DIVISION = """graph @d(%a: {dt}[4], %b: {dt}[4]) -> ({dt}[4], {dt}[4], {dt}[4]) {{
  %f = div(%a, %b) {{rounding_mode = "floor"}} : {dt}[4]
  %t = div(%a, %b) {{rounding_mode = "trunc"}} : {dt}[4]
  %r = remainder(%a, %b) : {dt}[4]
  return %f, %t, %r
}}
"""


@pytest.fixture(scope="module", params=["i64", "i32", "i16", "i8"])
def division(request):
    dtype = {"i64": torch.int64, "i32": torch.int32, "i16": torch.int16, "i8": torch.int8}[request.param]
    return CppModule(parse_graph(DIVISION.format(dt=request.param)), {}), dtype


def test_integer_division_matches_eager_and_int_min_by_minus_one_wraps(division):
    m, dtype = division
    low = torch.iinfo(dtype).min
    a = torch.tensor([low, 7, -7, low], dtype=dtype)
    b = torch.tensor([-1, 2, -2, 3], dtype=dtype)
    f, t, r = m(a, b)
    assert torch.equal(f, a // b)  # INT_MIN // -1 == INT_MIN on the CPU
    assert torch.equal(r, a % b)
    assert t.tolist() == [low, 3, 3, -(-low // 3)]  # torch.div(trunc) itself traps on INT_MIN / -1


def test_integer_division_by_zero_raises_as_eager(division):
    m, dtype = division
    a, b = torch.tensor([1, 2, 3, 4], dtype=dtype), torch.tensor([1, 0, 1, 1], dtype=dtype)
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        a // b  # eager
    with pytest.raises(RuntimeError, match=r"^ZeroDivisionError.* %f = div"):
        m(a, b)
    m(a, torch.ones(4, dtype=dtype))  # and the module keeps working


def test_constant_divisor_stays_plain_division():
    """x // 2 needs no check (a constant divisor other than 0 and -1): plain C++ division."""
    m = CppModule(parse_graph("""graph @h(%a: i64[8]) -> (i64[8]) {
  %two = full() {value = 2} : i64[]
  %q = div(%a, %two) {rounding_mode = "trunc"} : i64[8]
  return %q
}"""), {})
    a = torch.arange(-4, 4)
    assert torch.equal(m(a), torch.div(a, 2, rounding_mode="trunc"))
    assert "cs_idiv" not in _kernels(m)


# -- end to end: compile() ---------------------------------------------------------------------------
class Lookup(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(10, 4)

    def forward(self, ids):
        return self.emb(ids) * 2


def test_compiled_module_raises_like_eager_and_checks_can_be_turned_off():
    torch.manual_seed(0)
    model, ids = Lookup().eval(), torch.tensor([[1, 2, 9]])
    cm = codesign.compile(model, (ids,), "cpu-host", backend="cpp")
    torch.testing.assert_close(cm(ids), model(ids))
    bad = torch.tensor([[1, 10, 2]])
    with pytest.raises(IndexError):
        model(bad)
    with pytest.raises(IndexError, match="index 10 is out of range.*embedding"):
        cm(bad)
    off = codesign.compile(model, (ids,), "cpu-host", backend="cpp", check_indices=False)
    torch.testing.assert_close(off(ids), model(ids))
    assert "index check" not in _kernels(off.program("cpp"))
