"""Triton kernels (under TRITON_INTERPRET=1) raise as eager does: out-of-range gather indices
raise IndexError, integer division by zero `RuntimeError: ZeroDivisionError`; the flags
travel through a small int64 buffer checked after the launches (`triton/safety.py`).
INT_MIN // -1 wraps as torch's; `check_indices=False` leaves the indices unchecked."""

from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported anywhere

import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("triton")

from codesign.codegen.triton import TritonModule  # noqa: E402
from codesign.ir import parse_graph, run_graph  # noqa: E402


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CODESIGN_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "codesign-cache"))


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


def _run(module, ids=(0, 9, 3, 2), sel=(4, 1), col=(0, 2)):
    return module(torch.tensor(ids), X, torch.tensor(sel), torch.tensor(col))


def test_gathers_check_indices_and_valid_ones_match_eager():
    m = TritonModule(parse_graph(GATHERS), {"table": TABLE}, "test")
    assert "err_ptr" in m.source and "check_buffer(err" in m.source
    e, s, i, c = _run(m, sel=(4, 0), col=(-1, 2))
    assert torch.equal(e, TABLE[[0, 9, 3, 2]]) and torch.equal(s, X[[4, 0]])
    assert torch.equal(i, X[torch.tensor([4, 0])]) and torch.equal(c, X[:, torch.tensor([-1, 2])])
    cases = [({"ids": (0, 10, 1, 1)}, "embedding", 10), ({"ids": (-1, 0, 0, 0)}, "embedding", -1),
             ({"ids": (10 ** 12, 0, 0, 0)}, "embedding", 10 ** 12), ({"sel": (7, 0)}, "index_select", 7),
             ({"sel": (-1, 0)}, "index_select", -1), ({"col": (3, 0)}, "index", 3), ({"col": (-4, 0)}, "index", -4)]
    for kwargs, op, value in cases:
        with pytest.raises(IndexError, match=rf"index {value} is out of range .* = {op}\("):
            _run(m, **kwargs)
    _run(m)


def test_a_gather_in_a_row_kernel_is_checked():
    g = parse_graph("""graph @rows(%table: f32[30,16] param, %ids: i64[4,5]) -> (f32[4,5]) {
  group 0 {anchor = "s", kind = "reduce"}
  %e = embedding(%table, %ids) : f32[4,5,16] group(0)
  %s = sum(%e) {dims = [2]} : f32[4,5] group(0)
  return %s
}""")
    table = torch.randn(30, 16)
    m = TritonModule(g, {"table": table}, "test")
    ids = torch.randint(0, 30, (4, 5))
    torch.testing.assert_close(m(ids), run_graph(g, [ids], {"table": table})[0])
    ids[3, 4] = 30
    with pytest.raises(IndexError, match="index 30 is out of range"):
        m(ids)


def test_integer_division_by_zero_raises_and_int_min_by_minus_one_wraps():
    g = parse_graph("""graph @d(%a: i64[4], %b: i64[4]) -> (i64[4], i64[4], i64[4]) {
  %f = div(%a, %b) {rounding_mode = "floor"} : i64[4]
  %t = div(%a, %b) {rounding_mode = "trunc"} : i64[4]
  %r = remainder(%a, %b) : i64[4]
  return %f, %t, %r
}""")
    m = TritonModule(g, {}, "test")
    low = torch.iinfo(torch.int64).min
    a, b = torch.tensor([low, 7, -7, 5]), torch.tensor([-1, 2, 2, -3])
    f, t, r = m(a, b)
    assert torch.equal(f, a // b) and torch.equal(r, a % b) and t.tolist() == [low, 3, -3, -1]
    with pytest.raises(RuntimeError, match=r"^ZeroDivisionError"):
        m(a, torch.tensor([1, 0, 1, 1]))


def test_checks_off_has_no_index_checks():
    m = TritonModule(parse_graph(GATHERS), {"table": TABLE}, "test", check_indices=False)
    assert "err_ptr" not in m.source
    e, s, i, c = _run(m)
    assert torch.equal(e, TABLE[[0, 9, 3, 2]]) and torch.equal(c, X[:, torch.tensor([0, 2])])


@pytest.mark.parametrize("dt", ["i32", "i8", "u8"])
def test_narrow_integer_division(dt):
    """Narrow and unsigned integers: the same checks (no -1 case for unsigned types)."""
    dtype = {"i32": torch.int32, "i8": torch.int8, "u8": torch.uint8}[dt]
    g = parse_graph(f"""graph @d(%a: {dt}[4], %b: {dt}[4]) -> ({dt}[4], {dt}[4]) {{
  %f = div(%a, %b) {{rounding_mode = "floor"}} : {dt}[4]
  %r = remainder(%a, %b) : {dt}[4]
  return %f, %r
}}""")
    m = TritonModule(g, {}, "test")
    low = torch.iinfo(dtype).min
    a = torch.tensor([low, 7, 100, 5]).to(dtype)
    b = torch.tensor([255 if dt == "u8" else -1, 2, 3, 7]).to(dtype)
    f, r = m(a, b)
    assert torch.equal(f, a // b) and torch.equal(r, a % b)
    assert all(k.failure is None for k in m.guards.values())  # no kernel fell back to torch
    with pytest.raises(RuntimeError, match=r"^ZeroDivisionError.*%f = div"):
        m(a, torch.zeros(4, dtype=dtype))
