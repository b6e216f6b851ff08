"""The structured (`linalg.generic`) view of every op must agree with its torch semantics.

For each op we run the reference interpreter on a random tensor, then recompute the result
from the Structure alone — iterating over the whole domain, reading operands through the
indexing maps, writing through the result map — and require the two to be equal. Maps are
evaluated on whole index grids at once (the affine expressions work on tensors too).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from codesign.ir import (AffineMap, DType, Graph, Input, Node, TensorType, get_op, run_graph,
                         structure_of, verify)
from codesign.ir.ops import IterKind

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
f32 = DType.f32


# --------------------------------------------------------------------------- helpers
def one_node(op: str, args: list[torch.Tensor], attrs: dict):
    """A verified one-node graph running `op`, its output, and its Structure."""
    opdef = get_op(op)
    types = [TensorType.of(a) for a in args]
    type_ = opdef.infer(types, opdef.attr_values(attrs))
    inputs = tuple(Input(f"a{i}", t) for i, t in enumerate(types))
    node = Node("r", op, tuple(i.name for i in inputs), type_, attrs)
    g = verify(Graph("one", inputs, (node,), ("r",)))
    (out,) = run_graph(g, args)
    s = structure_of(g, node)
    assert len(s.operand_maps) == len(args)
    assert s.result_map.num_dims == len(s.domain)
    assert len(s.result_map.results) == out.dim()
    for m, a in zip(s.operand_maps, args):
        if m is not None:
            assert m.num_dims == len(s.domain) and len(m.results) == a.dim()
    return out, s


def grid(sizes) -> list[torch.Tensor]:
    """One index tensor per domain dim, each of the domain's full shape."""
    if not sizes:
        return []
    return list(torch.meshgrid(*(torch.arange(n) for n in sizes), indexing="ij"))


def eval_map(amap: AffineMap, points: list[torch.Tensor], shape) -> list[torch.Tensor]:
    out = []
    for r in amap.results:
        v = r.evaluate(points)
        out.append(v if isinstance(v, torch.Tensor) else torch.full(tuple(shape), int(v), dtype=torch.long))
    return out


def read(tensor: torch.Tensor, amap: AffineMap, points: list[torch.Tensor], shape, *,
         allow_outside=False, fill=0.0):
    """tensor[amap(p)] for every point p of the grid (of `shape`), and where it is in range.

    Out-of-range reads give `fill`, and fail the test unless `allow_outside`."""
    shape = tuple(shape)
    if tensor.dim() == 0:
        return tensor.expand(shape), torch.ones(shape, dtype=torch.bool)
    idx = eval_map(amap, points, shape)
    inside = torch.ones(shape, dtype=torch.bool)
    for axis, i in enumerate(idx):
        inside &= (i >= 0) & (i < tensor.shape[axis])
    if not allow_outside:
        assert bool(inside.all()), f"indexing map {amap} reads outside {list(tensor.shape)}"
    clamped = [i.clamp(0, max(tensor.shape[a] - 1, 0)) for a, i in enumerate(idx)]
    values = tensor[tuple(clamped)]
    return torch.where(inside, values, torch.as_tensor(fill, dtype=values.dtype)), inside


def read_in(tensor, amap, points, shape):
    return read(tensor, amap, points, shape)[0]


def reduction_dims(s) -> list[int]:
    return [i for i, d in enumerate(s.domain) if d.kind is IterKind.reduction]


def scatter(values: torch.Tensor, s, points, out_shape, reduce="sum"):
    """Combine `values` (one per domain point) into the result via the result map."""
    res_idx = eval_map(s.result_map, points, values.shape)
    flat = torch.zeros(out_shape, dtype=values.dtype).flatten()
    lin = torch.zeros(values.shape, dtype=torch.long)
    for axis, i in enumerate(res_idx):
        assert bool(((i >= 0) & (i < out_shape[axis])).all())
        lin = lin * out_shape[axis] + i
    if reduce == "sum":
        return flat.index_put_((lin.flatten(),), values.flatten(), accumulate=True).reshape(out_shape)
    return flat.scatter_reduce(0, lin.flatten(), values.flatten(), reduce, include_self=False).reshape(out_shape)


def assert_parallel_result_map(s):
    """The result map of an op with reduction loops names exactly its parallel loops."""
    used = s.result_map.dims_used()
    for i, d in enumerate(s.domain):
        if d.kind is IterKind.reduction:
            assert i not in used, f"reduction loop d{i} appears in the result map {s.result_map}"


def distinct(*shape) -> torch.Tensor:
    """A tensor whose elements are all different (so equal values mean the same element)."""
    n = math.prod(shape)
    return (torch.randperm(max(n, 1))[:n].float() + 1).reshape(shape)


shapes = st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple)


def check_layout(op, args, attrs):
    out, s = one_node(op, args, attrs)
    assert s.result_map == AffineMap.identity(out.dim())
    assert s.loop_sizes == tuple(out.shape)
    assert all(d.kind is IterKind.parallel for d in s.domain)
    points = grid(s.loop_sizes)
    (amap,) = s.operand_maps
    expected = read_in(args[0], amap, points, out.shape)
    assert torch.equal(out, expected), f"{op} {attrs}: map {amap} disagrees with torch"


# ----------------------------------------------------------------------- layout ops
@SETTINGS
@given(shape=shapes, data=st.data())
def test_reshape_map(shape, data):
    # split the elements' prime factors over a random new rank, with some 1s sprinkled in
    n = math.prod(shape)
    factors = [p for p in (2, 3) for _ in range(100) if n % p ** (_ + 1) == 0]
    rank = data.draw(st.integers(1, 4))
    new = [1] * rank
    for f in factors:
        new[data.draw(st.integers(0, rank - 1))] *= f
    check_layout("reshape", [distinct(*shape)], {"shape": tuple(new)})


@pytest.mark.parametrize("src,dst", [((2, 3, 4), (24,)), ((24,), (2, 3, 4)), ((2, 3, 4), (4, 3, 2)),
                                     ((1, 6, 1), (3, 1, 2)), ((6,), (1, 1, 6, 1)), ((4, 1), (2, 2))])
def test_reshape_map_cases(src, dst):
    check_layout("reshape", [distinct(*src)], {"shape": dst})


@SETTINGS
@given(shape=shapes, data=st.data())
def test_permute_map(shape, data):
    perm = tuple(data.draw(st.permutations(range(len(shape)))))
    check_layout("permute", [distinct(*shape)], {"perm": perm})


@SETTINGS
@given(shape=shapes, data=st.data())
def test_expand_map(shape, data):
    src = tuple(s if data.draw(st.booleans()) else 1 for s in shape)
    lead = tuple(data.draw(st.lists(st.integers(1, 3), max_size=2)))
    check_layout("expand", [distinct(*src)], {"shape": lead + shape})


@SETTINGS
@given(shape=shapes, data=st.data())
def test_slice_map(shape, data):
    dim = data.draw(st.integers(0, len(shape) - 1))
    start = data.draw(st.integers(0, shape[dim]))
    end = data.draw(st.integers(start, shape[dim]))
    step = data.draw(st.integers(1, 3))
    check_layout("slice", [distinct(*shape)], {"dim": dim, "start": start, "end": end, "step": step})


@SETTINGS
@given(shape=shapes, data=st.data())
def test_pad_map(shape, data):
    pads = []
    for s in shape:
        before = data.draw(st.integers(-s, 2))  # negative pads crop (torch crops, then pads)
        after = data.draw(st.integers(-(s + min(before, 0)), 2))
        pads += [before, after]
    value = data.draw(st.sampled_from([0.0, -1.5, 9.0]))
    x = distinct(*shape)
    out, s = one_node("pad", [x], {"pads": tuple(pads), "value": value})
    assert s.result_map == AffineMap.identity(out.dim())
    points = grid(s.loop_sizes)
    if not points or out.numel() == 0:
        return
    expected, inside = read(x, s.operand_maps[0], points, out.shape, allow_outside=True, fill=value)
    assert torch.equal(out, expected)


@SETTINGS
@given(shape=shapes, data=st.data())
def test_concat_maps_are_piecewise(shape, data):
    dim = data.draw(st.integers(0, len(shape) - 1))
    sizes = data.draw(st.lists(st.integers(0, 3), min_size=1, max_size=4))
    assume(sum(sizes) > 0)
    args = [distinct(*(shape[:dim] + (k,) + shape[dim + 1:])) * (10 ** i) for i, k in enumerate(sizes)]
    out, s = one_node("concat", args, {"dim": dim})
    assert s.result_map == AffineMap.identity(out.dim())
    points = grid(s.loop_sizes)
    covered = torch.zeros(out.shape, dtype=torch.int64)
    for amap, a in zip(s.operand_maps, args):
        idx = eval_map(amap, points, out.shape)
        for axis, i in enumerate(idx):  # only the concat axis may leave the operand
            if axis != dim:
                assert bool(((i >= 0) & (i < a.shape[axis])).all())
        mine = (idx[dim] >= 0) & (idx[dim] < a.shape[dim])  # this operand's slab of the result
        covered += mine.long()
        if a.numel():
            values, _ = read(a, amap, points, out.shape, allow_outside=True)
            assert torch.equal(out[mine], values[mine])
    assert bool((covered == 1).all()), "each result element belongs to exactly one operand"


@SETTINGS
@given(lead=st.lists(st.integers(1, 2), max_size=2), c=st.integers(1, 3), h=st.integers(1, 3),
       w=st.integers(1, 3), r=st.integers(1, 3))
def test_pixel_shuffle_and_unshuffle_maps(lead, c, h, w, r):
    check_layout("pixel_shuffle", [distinct(*lead, c * r * r, h, w)], {"factor": r})
    check_layout("pixel_unshuffle", [distinct(*lead, c, h * r, w * r)], {"factor": r})


@SETTINGS
@given(shape=st.lists(st.integers(1, 3), min_size=3, max_size=5).map(tuple), data=st.data())
def test_upsample_nearest_map(shape, data):
    k = data.draw(st.integers(1, len(shape) - 2))
    scales = tuple(data.draw(st.lists(st.integers(1, 3), min_size=k, max_size=k)))
    check_layout("upsample_nearest", [distinct(*shape)], {"scales": scales})


# -------------------------------------------------------------- pointwise, broadcasting
def broadcastable(shape, data):
    """A shape that broadcasts against `shape`: a suffix of it with some dims set to 1."""
    k = data.draw(st.integers(0, len(shape)))
    return tuple(s if data.draw(st.booleans()) else 1 for s in shape[len(shape) - k:])


@SETTINGS
@given(shape=shapes, data=st.data())
def test_pointwise_broadcast_maps(shape, data):
    a_shape, b_shape = broadcastable(shape, data), broadcastable(shape, data)
    if data.draw(st.booleans()):
        a_shape = shape
    else:
        b_shape = shape
    a, b = torch.randn(a_shape), torch.randn(b_shape)
    cases = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "maximum": torch.maximum,
             "lt": torch.lt, "pow": lambda x, y: x.abs() ** y}
    op = data.draw(st.sampled_from(sorted(cases)))
    out, s = one_node(op, [a, b], {})
    assert s.result_map == AffineMap.identity(out.dim()) and s.loop_sizes == tuple(out.shape)
    points = grid(s.loop_sizes)
    ma, mb = s.operand_maps
    for m in (ma, mb):
        assert m.is_projected_permutation
    xa, xb = read_in(a, ma, points, out.shape), read_in(b, mb, points, out.shape)
    if op == "pow":
        out, s = one_node(op, [a.abs(), b], {})
    torch.testing.assert_close(out, cases[op](xa, xb).to(out.dtype), equal_nan=True)


@SETTINGS
@given(shape=shapes, data=st.data())
def test_where_and_unary_maps(shape, data):
    cond = torch.rand(broadcastable(shape, data)) > 0.5
    a, b = torch.randn(shape), torch.randn(broadcastable(shape, data))
    out, s = one_node("where", [cond, a, b], {})
    points = grid(s.loop_sizes)
    vals = [read_in(t, m, points, out.shape) for t, m in zip((cond, a, b), s.operand_maps)]
    assert torch.equal(out, torch.where(*vals))
    for op in ("relu", "tanh", "cast"):
        attrs = {"dtype": "f16"} if op == "cast" else {}
        out, s = one_node(op, [a], attrs)
        assert s.operand_maps == (AffineMap.identity(a.dim()),) == (s.result_map,)


def test_batch_norm_maps():
    torch.manual_seed(0)
    x, mean, var, w, b = torch.randn(2, 3, 4), torch.randn(3), torch.rand(3) + 0.5, torch.randn(3), torch.randn(3)
    out, s = one_node("batch_norm", [x, mean, var, w, b], {"eps": 1e-3})
    points = grid(s.loop_sizes)
    xv, mv, vv, wv, bv = (read_in(t, m, points, out.shape) for t, m in zip((x, mean, var, w, b),
                                                                                        s.operand_maps))
    torch.testing.assert_close(out, (xv - mv) / torch.sqrt(vv + 1e-3) * wv + bv)


# -------------------------------------------------------------------------- reductions
@SETTINGS
@given(shape=shapes, data=st.data())
def test_reduction_maps(shape, data):
    dims = tuple(sorted(data.draw(st.sets(st.integers(0, len(shape) - 1), min_size=1))))
    keepdim = data.draw(st.booleans())
    op = data.draw(st.sampled_from(["sum", "mean", "amax", "amin", "prod", "any"]))
    x = torch.randn(shape) + 0.1
    if op == "any":
        x = x > 0.8
    out, s = one_node(op, [x], {"dims": dims, "keepdim": keepdim})
    assert s.loop_sizes == tuple(x.shape)
    assert reduction_dims(s) == list(dims)
    assert_parallel_result_map(s)
    assert s.operand_maps[0] == AffineMap.identity(x.dim())
    points = grid(s.loop_sizes)
    vals = read_in(x, s.operand_maps[0], points, x.shape)
    if op in ("sum", "mean"):
        expected = scatter(vals, s, points, out.shape)
        if op == "mean":
            expected = expected / math.prod(x.shape[d] for d in dims)
    elif op == "any":
        expected = scatter(vals.long(), s, points, out.shape) > 0
    else:
        expected = scatter(vals, s, points, out.shape, {"amax": "amax", "amin": "amin", "prod": "prod"}[op])
    torch.testing.assert_close(out, expected.to(out.dtype))


@SETTINGS
@given(shape=shapes, data=st.data())
def test_arg_reduction_maps(shape, data):
    dim = data.draw(st.integers(0, len(shape) - 1))
    keepdim = data.draw(st.booleans())
    x = distinct(*shape)
    for op, red in (("argmax", "amax"), ("argmin", "amin")):
        out, s = one_node(op, [x], {"dim": dim, "keepdim": keepdim})
        assert reduction_dims(s) == [dim]
        assert_parallel_result_map(s)
        points = grid(s.loop_sizes)
        best = scatter(read_in(x, s.operand_maps[0], points, x.shape), s, points, out.shape, red)
        # the value at the returned index (along dim) is the extreme of its reduction set
        picked = x.gather(dim, out if keepdim else out.unsqueeze(dim))
        assert torch.equal(picked.reshape(best.shape), best)


@SETTINGS
@given(shape=shapes, data=st.data())
def test_cumsum_map(shape, data):
    dim = data.draw(st.integers(0, len(shape) - 1))
    x = torch.randn(shape)
    out, s = one_node("cumsum", [x], {"dim": dim})
    assert_parallel_result_map(s)
    points = grid(s.loop_sizes)
    vals = read_in(x, s.operand_maps[0], points, points[0].shape)
    # the body sums the reduction points j <= i (i = the result's index along dim)
    (j,) = reduction_dims(s)
    keep = points[j] <= points[dim]
    expected = scatter(torch.where(keep, vals, torch.zeros(())), s, points, out.shape)
    torch.testing.assert_close(out, expected)


def dependency_check(op, x, attrs, extra=()):
    """Changing x at one point changes only results whose parallel loops agree with it."""
    out, s = one_node(op, [x, *extra], attrs)
    assert s.operand_maps[0] == AffineMap.identity(x.dim())
    red = reduction_dims(s)
    for flat in range(0, x.numel(), max(1, x.numel() // 6)):
        p = torch.tensor(torch.unravel_index(torch.tensor(flat), x.shape))
        x2 = x.clone()
        x2[tuple(p)] += 3.0
        out2, _ = one_node(op, [x2, *extra], attrs)
        changed = (out2 - out).abs() > 1e-5
        points = grid(s.loop_sizes)
        same_parallel = torch.ones(x.shape, dtype=torch.bool)
        for i in range(x.dim()):
            if i not in red:
                same_parallel &= points[i] == p[i]
        reached = scatter(same_parallel.long(), s, points, out.shape) > 0
        assert bool((~changed | reached).all()), f"{op}: a result outside the reduction set changed"


@pytest.mark.parametrize("op,shape,attrs,params", [
    ("softmax", (2, 3, 4), {"dim": 1}, ()),
    ("log_softmax", (3, 4), {"dim": 0}, ()),
    ("layer_norm", (2, 3, 4), {"normalized_rank": 2}, ((3, 4), (3, 4))),
    ("rms_norm", (2, 3, 4), {"normalized_rank": 1}, ((4,),)),
    ("group_norm", (2, 6, 3), {"groups": 3}, ((6,), (6,))),
    ("batch_norm", (2, 3, 4), {}, ((3,), (3,))),
    ("var", (2, 3, 4), {"dims": (0, 2)}, ()),
])
def test_normalization_reduction_sets(op, shape, attrs, params):
    torch.manual_seed(0)
    extra = [torch.rand(p) + 0.5 for p in params]
    dependency_check(op, torch.randn(shape), attrs, extra)


@pytest.mark.parametrize("op,shape,attrs", [
    ("softmax", (2, 3, 4), {"dim": 1}), ("softmax", (5,), {"dim": 0}),
    ("log_softmax", (3, 4), {"dim": 0}), ("layer_norm", (2, 3, 4), {"normalized_rank": 2}),
    ("rms_norm", (2, 3, 4), {"normalized_rank": 1}),
])
def test_normalization_equals_reduction_over_its_reduction_loops(op, shape, attrs):
    torch.manual_seed(1)
    x = torch.randn(shape)
    w = torch.randn(shape[len(shape) - attrs.get("normalized_rank", 0):]) if "normalized_rank" in attrs else None
    args = [x] + ([w] if w is not None else [])
    out, s = one_node(op, args, attrs)
    red = tuple(reduction_dims(s))
    points = grid(s.loop_sizes)
    if op == "softmax":
        expected = x.exp() / x.exp().sum(red, keepdim=True)
    elif op == "log_softmax":
        expected = x - x.exp().sum(red, keepdim=True).log()
    else:
        wv = read_in(w, s.operand_maps[1], points, x.shape)
        if op == "layer_norm":
            mu = x.mean(red, keepdim=True)
            expected = (x - mu) / torch.sqrt(((x - mu) ** 2).mean(red, keepdim=True) + 1e-5) * wv
        else:
            expected = x / torch.sqrt((x ** 2).mean(red, keepdim=True) + 1e-5) * wv
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------ contractions, windows, gathers
def mul_add(s, args, out_shape, fill_outside=False):
    """Σ over the domain of the product of the first two operands read through their maps."""
    points = grid(s.loop_sizes)
    prod = None
    for a, m in zip(args[:2], s.operand_maps[:2]):
        v, _ = read(a, m, points, points[0].shape, allow_outside=fill_outside)
        prod = v if prod is None else prod * v
    out = scatter(prod, s, points, out_shape)
    if len(args) > 2:  # bias: read once per result point (at reduction index 0)
        bm = s.operand_maps[2]
        red = reduction_dims(s)
        assert not (bm.dims_used() & set(red)), "the bias map must not use a reduction loop"
        first = torch.ones(points[0].shape, dtype=torch.bool)
        for r in red:
            first &= points[r] == 0
        bias = read_in(args[2], bm, points, points[0].shape)
        out = out + scatter(torch.where(first, bias, torch.zeros(())), s, points, out_shape)
    return out


@SETTINGS
@given(m=st.integers(1, 3), k=st.integers(1, 3), n=st.integers(1, 3),
       batch=st.lists(st.integers(1, 3), max_size=2), data=st.data())
def test_matmul_map(m, k, n, batch, data):
    a_batch = tuple(s if data.draw(st.booleans()) else 1 for s in batch)
    b_batch = tuple(batch[len(batch) - data.draw(st.integers(0, len(batch))):])
    a, b = torch.randn(*a_batch, m, k), torch.randn(*b_batch, k, n)
    out, s = one_node("matmul", [a, b], {})
    assert reduction_dims(s) == [len(s.domain) - 1]
    assert_parallel_result_map(s)
    torch.testing.assert_close(out, mul_add(s, [a, b], out.shape))


@SETTINGS
@given(lead=st.lists(st.integers(1, 3), max_size=2), k=st.integers(1, 4), n=st.integers(1, 3),
       bias=st.booleans())
def test_linear_map(lead, k, n, bias):
    args = [torch.randn(*lead, k), torch.randn(n, k)] + ([torch.randn(n)] if bias else [])
    out, s = one_node("linear", args, {})
    assert_parallel_result_map(s)
    torch.testing.assert_close(out, mul_add(s, args, out.shape))


@SETTINGS
@given(data=st.data())
def test_conv_map(data):
    nsp = data.draw(st.integers(1, 2))
    groups = data.draw(st.integers(1, 2))
    cin, fpg = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2))
    kernel = [data.draw(st.integers(1, 3)) for _ in range(nsp)]
    stride = [data.draw(st.integers(1, 3)) for _ in range(nsp)]
    dilation = [data.draw(st.integers(1, 2)) for _ in range(nsp)]
    padding = [data.draw(st.integers(0, 2)) for _ in range(nsp)]
    size = [data.draw(st.integers(1, 5)) for _ in range(nsp)]
    assume(all(sz + 2 * p - d * (kk - 1) - 1 >= 0 for sz, p, d, kk in zip(size, padding, dilation, kernel)))
    x = torch.randn(data.draw(st.integers(1, 2)), cin * groups, *size)
    w = torch.randn(fpg * groups, cin, *kernel)
    args = [x, w] + ([torch.randn(fpg * groups)] if data.draw(st.booleans()) else [])
    attrs = {"stride": tuple(stride), "padding": tuple(padding), "dilation": tuple(dilation), "groups": groups}
    out, s = one_node("conv", args, attrs)
    assert reduction_dims(s) == list(range(2 + nsp, 3 + 2 * nsp))
    assert_parallel_result_map(s)
    torch.testing.assert_close(out, mul_add(s, args, out.shape, fill_outside=True), rtol=1e-4, atol=1e-5)


@SETTINGS
@given(data=st.data())
def test_pool_maps(data):
    kernel = tuple(data.draw(st.integers(1, 3)) for _ in range(2))
    stride = tuple(data.draw(st.integers(1, 3)) for _ in range(2))
    padding = tuple(data.draw(st.integers(0, k // 2)) for k in kernel)
    ceil_mode = data.draw(st.booleans())
    dilation = tuple(data.draw(st.integers(1, 2)) for _ in range(2))
    h, w = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5))
    assume(all(sz + 2 * p >= d * (k - 1) + 1 for sz, p, k, d in zip((h, w), padding, kernel, dilation)))
    x = torch.randn(1, 2, h, w)
    out, s = one_node("max_pool", [x], {"kernel": kernel, "stride": stride, "padding": padding,
                                        "ceil_mode": ceil_mode, "dilation": dilation})
    assert reduction_dims(s) == [4, 5]
    assert_parallel_result_map(s)
    points = grid(s.loop_sizes)
    vals, inside = read(x, s.operand_maps[0], points, points[0].shape, allow_outside=True,
                        fill=float("-inf"))
    torch.testing.assert_close(out, scatter(vals, s, points, out.shape, "amax"))
    assume(all(sz + 2 * p >= k for sz, p, k in zip((h, w), padding, kernel)))
    base = {"kernel": kernel, "stride": stride, "padding": padding, "ceil_mode": ceil_mode}
    out, s = one_node("max_pool", [x], base)
    assert reduction_dims(s) == [4, 5]
    assert_parallel_result_map(s)
    points = grid(s.loop_sizes)
    vals, inside = read(x, s.operand_maps[0], points, points[0].shape, allow_outside=True,
                        fill=float("-inf"))
    torch.testing.assert_close(out, scatter(vals, s, points, out.shape, "amax"))
    vals, inside = read(x, s.operand_maps[0], points, points[0].shape, allow_outside=True)
    total = scatter(vals, s, points, out.shape)
    out, s = one_node("avg_pool", [x], {**base, "count_include_pad": False})
    torch.testing.assert_close(out, total / scatter(inside.float(), s, points, out.shape))
    if not ceil_mode:  # with count_include_pad the divisor is the whole window
        out, s = one_node("avg_pool", [x], base)
        torch.testing.assert_close(out, total / (kernel[0] * kernel[1]))


@SETTINGS
@given(data=st.data())
def test_attention_map(data):
    rank = data.draw(st.integers(2, 4))
    kv_heads = data.draw(st.integers(1, 2))
    group = data.draw(st.integers(1, 2))
    batch = tuple(data.draw(st.integers(1, 2)) for _ in range(rank - 3))
    heads_q = (kv_heads * group,) if rank >= 3 else ()
    heads_k = (kv_heads,) if rank >= 3 else ()
    lq, lk, d, e = (data.draw(st.integers(1, 3)) for _ in range(4))
    q, k, v = torch.randn(*batch, *heads_q, lq, d), torch.randn(*batch, *heads_k, lk, d), torch.randn(
        *batch, *heads_k, lk, e)
    args = [q, k, v]
    scores_shape = q.shape[:-1] + (lk,)
    mask_kind = data.draw(st.sampled_from(["none", "bool", "float"]))
    if mask_kind != "none":
        mshape = broadcastable(tuple(scores_shape), data)
        mask = torch.rand(mshape) > 0.3 if mask_kind == "bool" else torch.randn(mshape)
        if mask_kind == "bool":  # every row keeps one key
            mask = mask | (torch.arange(mshape[-1]) == 0) if mask.dim() else torch.tensor(True)
        args.append(mask)
    causal = mask_kind == "none" and lk >= lq and data.draw(st.booleans())
    out, s = one_node("attention", args, {"scale": 0.7, "causal": causal})
    nb = q.dim() - 2
    i_, e_, j_, d_ = nb, nb + 1, nb + 2, nb + 3
    assert reduction_dims(s) == [j_, d_]
    assert_parallel_result_map(s)
    points = grid(s.loop_sizes)
    qv, kv, vv = (read_in(t, m, points, points[0].shape) for t, m in zip(args[:3], s.operand_maps))
    scores = (qv * kv).sum(d_) * 0.7  # over d: shape (batch..., i, e, j)
    assert torch.equal(vv, vv.select(d_, 0).unsqueeze(d_).expand_as(vv))  # v does not depend on d
    if mask_kind != "none":
        mv = read_in(args[3], s.operand_maps[3], points, points[0].shape).select(d_, 0)
        scores = scores.masked_fill(~mv, float("-inf")) if mask_kind == "bool" else scores + mv
    if causal:
        pts = [p.select(d_, 0) for p in points]
        scores = scores.masked_fill(pts[j_] > pts[i_] + lk - lq, float("-inf"))
    probs = scores.softmax(-1)
    expected = (probs * vv.select(d_, 0)).sum(-1)  # over j: (batch..., i, e)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


@SETTINGS
@given(idx_shape=st.lists(st.integers(1, 3), max_size=3).map(tuple), rows=st.integers(1, 5),
       dim=st.integers(1, 3))
def test_embedding_map(idx_shape, rows, dim):
    table, idx = torch.randn(rows, dim), torch.randint(0, rows, idx_shape)
    out, s = one_node("embedding", [table, idx], {})
    assert s.operand_maps[0] is None  # the table read is indirect
    points = grid(s.loop_sizes)
    iv = read_in(idx, s.operand_maps[1], points, out.shape)
    assert torch.equal(out, table[iv, points[-1]])


@SETTINGS
@given(shape=shapes, n=st.integers(1, 4), data=st.data())
def test_index_select_map(shape, n, data):
    dim = data.draw(st.integers(0, len(shape) - 1))
    x, idx = torch.randn(shape), torch.randint(0, shape[dim], (n,))
    out, s = one_node("index_select", [x, idx], {"dim": dim})
    assert s.operand_maps[0] is None
    points = grid(s.loop_sizes)
    iv = read_in(idx, s.operand_maps[1], points, out.shape)
    src = list(points)
    src[dim] = iv
    assert torch.equal(out, x[tuple(src)])


@SETTINGS
@given(shape=shapes, data=st.data())
def test_index_maps(shape, data):
    dim = data.draw(st.integers(0, len(shape) - 1))
    count = data.draw(st.integers(1, len(shape) - dim))
    block = tuple(data.draw(st.lists(st.integers(1, 3), max_size=2)))
    idx_shapes = [broadcastable(block, data) for _ in range(count)]
    x = distinct(*shape)
    indices = [torch.randint(0, shape[dim + k], sh) for k, sh in enumerate(idx_shapes)]
    out, s = one_node("index", [x, *indices], {"dim": dim})
    assert s.operand_maps[0] is None and s.result_map == AffineMap.identity(out.dim())
    points = grid(s.loop_sizes)
    nb = out.dim() - (x.dim() - count)
    src = list(points[:dim])
    for t, m in zip(indices, s.operand_maps[1:]):
        src.append(read_in(t, m, points, out.shape))  # the index tensors: affine, broadcast
    src += points[dim + nb:]
    expected = x[tuple(src)] if src else x
    assert torch.equal(out, expected)


def test_moe_structure():
    from codesign.ir import parse_graph
    g = parse_graph("""graph @g(%x: f32[3,4], %r: f32[2,4], %w: f32[2,4,4]) -> (f32[3,4]) {
  %m = moe(%x, %r, %w) {num_experts = 2, top_k = 1} : f32[3,4] ({
    graph @expert(%t: f32[3,4], %a: f32[4,4]) -> (f32[3,4]) {
      %o = linear(%t, %a) : f32[3,4]
      return %o
    }
  })
  return %m
}""")
    s = structure_of(g, g.nodes[0])
    assert s.operand_maps == (AffineMap.identity(2), None, None)
    assert s.result_map == AffineMap.identity(2) and s.loop_sizes == (3, 4)
