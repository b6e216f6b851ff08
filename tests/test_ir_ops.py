"""Op definitions: shape inference (good and bad), interpreter vs. direct torch calls,
affine expression folding / printing / bounds, TensorType and DType basics."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from codesign.ir import (OPS, AffineMap, Const, Dim, DType, Graph, Input, InputKind, Node,
                         TensorType, get_op, run_graph, verify)
from codesign.ir.affine import Add, FloorDiv, Mod, Mul, bound
from codesign.ir.ops import ShapeError, UnknownOpError

f32, f16, i64, i1 = DType.f32, DType.f16, DType.i64, DType.i1


def T(*shape, dtype=f32):
    return TensorType(tuple(shape), dtype)


def infer(op, *operands, **attrs):
    opdef = get_op(op)
    return opdef.infer(list(operands), opdef.attr_values(attrs))


def run_op(op, args, attrs=None, type_=None):
    """Run one op through the interpreter (a one-node graph) and return its value."""
    attrs = attrs or {}
    opdef = get_op(op)
    types = [TensorType.of(a) for a in args]
    if type_ is None:
        type_ = opdef.infer(types, opdef.attr_values(attrs))
    inputs = tuple(Input(f"a{i}", t) for i, t in enumerate(types))
    g = Graph("one", inputs, (Node("r", op, tuple(i.name for i in inputs), type_, attrs),), ("r",))
    verify(g)
    (out,) = run_graph(g, list(args))
    return out


# ------------------------------------------------------------------------- shape inference
@pytest.mark.parametrize("op,operands,attrs,expected", [
    ("add", [T(2, 1, 4), T(3, 1)], {}, T(2, 3, 4)),
    ("add", [T(), T(5)], {}, T(5)),
    ("mul", [T(1), T(1, 1)], {}, T(1, 1)),
    ("eq", [T(2, 3), T(3)], {}, T(2, 3, dtype=i1)),
    ("logical_not", [T(4)], {}, T(4, dtype=i1)),
    ("where", [T(2, 1, dtype=i1), T(3), T(1, 3)], {}, T(2, 3)),
    ("cast", [T(2, 3)], {"dtype": "bf16"}, T(2, 3, dtype=DType.bf16)),
    ("neg", [T(3, dtype=i64)], {}, T(3, dtype=i64)),
    ("sum", [T(2, 3, 4)], {"dims": (0, 2)}, T(3)),
    ("sum", [T(2, 3, 4)], {"dims": (1,), "keepdim": True}, T(2, 1, 4)),
    ("any", [T(2, 3, dtype=i1)], {"dims": (1,)}, T(2, dtype=i1)),
    ("argmax", [T(2, 3)], {"dim": 1}, T(2, dtype=i64)),
    ("argmin", [T(2, 3)], {"dim": 0, "keepdim": True}, T(1, 3, dtype=i64)),
    ("cumsum", [T(2, 3)], {"dim": 1}, T(2, 3)),
    ("softmax", [T(2, 3)], {"dim": 1}, T(2, 3)),
    ("layer_norm", [T(2, 3, 4), T(3, 4), T(3, 4)], {"normalized_rank": 2}, T(2, 3, 4)),
    ("rms_norm", [T(2, 4), T(4)], {"normalized_rank": 1}, T(2, 4)),
    ("group_norm", [T(2, 6, 5), T(6), T(6)], {"groups": 3}, T(2, 6, 5)),
    ("batch_norm", [T(2, 3, 5), T(3), T(3)], {}, T(2, 3, 5)),
    ("matmul", [T(5, 1, 2, 3), T(4, 3, 6)], {}, T(5, 4, 2, 6)),
    ("matmul", [T(2, 3), T(3, 4)], {}, T(2, 4)),
    ("linear", [T(2, 7, 3), T(5, 3), T(5)], {}, T(2, 7, 5)),
    ("conv", [T(1, 4, 9, 9), T(6, 2, 3, 3)], {"stride": (2, 1), "padding": (1, 0), "dilation": (1, 2),
                                                "groups": 2}, T(1, 6, 5, 5)),
    ("conv", [T(2, 3, 10), T(4, 3, 3), T(4)], {"stride": (3,), "padding": (1,), "dilation": (1,)},
     T(2, 4, 4)),
    ("attention", [T(2, 4, 5, 8), T(2, 2, 7, 8), T(2, 2, 7, 3)], {"scale": 0.5}, T(2, 4, 5, 3)),
    ("attention", [T(5, 8), T(7, 8), T(7, 3), T(5, 7, dtype=i1)], {"scale": 0.5}, T(5, 3)),
    ("embedding", [T(10, 4), T(2, 3, dtype=i64)], {}, T(2, 3, 4)),
    ("index_select", [T(5, 6), T(3, dtype=DType.i32)], {"dim": 1}, T(5, 3)),
    ("max_pool", [T(1, 2, 5, 5)], {"kernel": (2, 2), "stride": (2, 2), "padding": (0, 0)}, T(1, 2, 2, 2)),
    ("max_pool", [T(1, 2, 5, 5)], {"kernel": (2, 2), "stride": (2, 2), "padding": (0, 0),
                                   "ceil_mode": True}, T(1, 2, 3, 3)),
    ("max_pool", [T(1, 1, 5, 5)], {"kernel": (2, 2), "stride": (2, 2), "padding": (1, 1),
                                   "ceil_mode": True}, T(1, 1, 3, 3)),
    ("reshape", [T(2, 6)], {"shape": (3, 1, 4)}, T(3, 1, 4)),
    ("permute", [T(2, 3, 4)], {"perm": (2, 0, 1)}, T(4, 2, 3)),
    ("expand", [T(3, 1)], {"shape": (2, 3, 5)}, T(2, 3, 5)),
    ("slice", [T(10, 3)], {"dim": 0, "start": 1, "end": 8, "step": 3}, T(3, 3)),
    ("slice", [T(10, 3)], {"dim": 1, "start": 2, "end": 2}, T(10, 0)),
    ("concat", [T(2, 3), T(2, 5), T(2, 1)], {"dim": 1}, T(2, 9)),
    ("pad", [T(2, 3)], {"pads": (1, 2, -1, 0)}, T(5, 2)),
    ("pixel_shuffle", [T(1, 8, 3, 4)], {"factor": 2}, T(1, 2, 6, 8)),
    ("pixel_unshuffle", [T(1, 2, 6, 8)], {"factor": 2}, T(1, 8, 3, 4)),
    ("upsample_nearest", [T(1, 2, 3, 4)], {"scales": (2, 3)}, T(1, 2, 6, 12)),
    ("moe", [T(2, 3, 8), T(4, 8), T(4, 16, 8)], {"num_experts": 4, "top_k": 2}, T(2, 3, 8)),
])
def test_infer_good(op, operands, attrs, expected):
    assert infer(op, *operands, **attrs) == expected


@pytest.mark.parametrize("op,operands,attrs,match", [
    ("add", [T(2, 3), T(4)], {}, "do not broadcast"),
    ("add", [T(2), T(2, dtype=f16)], {}, "one element type"),
    ("exp", [T(2, dtype=i64)], {}, "floating-point"),
    ("where", [T(2), T(2), T(2)], {}, "i1 condition"),
    ("cast", [T(2)], {"dtype": "f8"}, "unknown element type"),
    ("sum", [T(2, 3)], {"dims": (2,)}, "out of range"),
    ("sum", [T(2, 3)], {"dims": (0, 0)}, "out of range"),
    ("sum", [T(2, 3)], {"dims": (-1,)}, "out of range"),
    ("mean", [T(2, 3, dtype=i64)], {"dims": (0,)}, "floating-point"),
    ("argmax", [T(2, 3)], {"dim": 2}, "out of range"),
    ("cumsum", [T(2, 3)], {"dim": -1}, "out of range"),
    ("softmax", [T(2, 3)], {"dim": 2}, "out of range"),
    ("softmax", [T(2, 3, dtype=i64)], {"dim": 0}, "floating-point"),
    ("layer_norm", [T(2, 3), T(2)], {"normalized_rank": 1}, "normalised shape"),
    ("layer_norm", [T(2, 3)], {"normalized_rank": 3}, "normalized_rank"),
    ("group_norm", [T(2, 6, 5)], {"groups": 4}, "do not divide"),
    ("batch_norm", [T(2, 3, 5), T(4), T(3)], {}, "statistics shape"),
    ("matmul", [T(2, 3), T(4, 5)], {}, "contraction sizes differ"),
    ("matmul", [T(3), T(3, 5)], {}, "rank >= 2"),
    ("matmul", [T(2, 2, 3), T(3, 3, 5)], {}, "do not broadcast"),
    ("linear", [T(2, 3), T(5, 4)], {}, "does not match weight"),
    ("linear", [T(2, 3), T(5, 3), T(3)], {}, "bias"),
    ("conv", [T(1, 4, 9, 9), T(6, 3, 3, 3)], {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1)},
     "input channels"),
    ("conv", [T(1, 4, 9, 9), T(6, 4, 3, 3)], {"stride": (1,), "padding": (0, 0), "dilation": (1, 1)},
     "stride"),
    ("conv", [T(1, 4, 2, 2), T(6, 4, 3, 3)], {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1)},
     "empty"),
    ("attention", [T(2, 4, 5, 8), T(2, 3, 7, 8), T(2, 3, 7, 3)], {"scale": 1.0}, "multiple"),
    ("attention", [T(5, 8), T(7, 6), T(7, 3)], {"scale": 1.0}, "do not fit"),
    ("attention", [T(5, 8), T(7, 8), T(7, 3), T(5, 6)], {"scale": 1.0}, "do not broadcast"),
    ("attention", [T(5, 8), T(7, 8), T(7, 3), T(5, 7, dtype=i64)], {"scale": 1.0}, "mask must be"),
    ("embedding", [T(10, 4), T(3)], {}, "integer indices"),
    ("embedding", [T(10), T(3, dtype=i64)], {}, "rows, dim"),
    ("index_select", [T(5, 6), T(3, 1, dtype=i64)], {"dim": 0}, "1-d indices"),
    ("max_pool", [T(2, 5, 5)], {"kernel": (2, 2), "stride": (2, 2), "padding": (0, 0)}, "NCHW"),
    ("max_pool", [T(1, 1, 5, 5)], {"kernel": (2,), "stride": (2, 2), "padding": (0, 0)}, "2 entries"),
    ("max_pool", [T(1, 1, 5, 5)], {"kernel": (2, 2), "stride": (0, 2), "padding": (0, 0)}, "positive"),
    ("max_pool", [T(1, 1, 5, 5)], {"kernel": (2, 2), "stride": (1, 1), "padding": (2, 0)}, "at most half"),
    ("avg_pool", [T(1, 1, 5, 5)], {"kernel": (3, 3), "stride": (1, 1), "padding": (0, 0),
                                   "dilation": (2, 1)}, "dilation 1 only"),
    ("expand", [T(3)], {"shape": (-1, 3)}, "non-negative"),
    ("reshape", [T(2, 6)], {"shape": (5, 2)}, "12 elements"),
    ("reshape", [T(2, 6)], {"shape": (-1, 12)}, "non-negative"),
    ("permute", [T(2, 3)], {"perm": (0, 0)}, "not a permutation"),
    ("permute", [T(2, 3)], {"perm": (1, 0, 2)}, "not a permutation"),
    ("expand", [T(3, 2)], {"shape": (3, 4)}, "cannot broadcast"),
    ("expand", [T(3, 2)], {"shape": (2,)}, "cannot broadcast"),
    ("slice", [T(10)], {"dim": 0, "start": 3, "end": 11}, "out of range"),
    ("slice", [T(10)], {"dim": 0, "start": 5, "end": 3}, "out of range"),
    ("slice", [T(10)], {"dim": 0, "start": 0, "end": 3, "step": 0}, "out of range"),
    ("slice", [T(10)], {"dim": 1, "start": 0, "end": 3}, "out of range"),
    ("concat", [T(2, 3), T(3, 3)], {"dim": 1}, "does not match"),
    ("concat", [T(2, 3), T(2, 3, dtype=f16)], {"dim": 0}, "does not match"),
    ("concat", [T(2, 3)], {"dim": 2}, "out of range"),
    ("pad", [T(2, 3)], {"pads": (1, 1)}, "4 entries"),
    ("pad", [T(2, 3)], {"pads": (0, 0, -2, -2)}, "negative"),
    ("pad", [T(1)], {"pads": (1, -2)}, "negative"),  # torch crops 2 of 1 before it pads
    ("pixel_shuffle", [T(1, 6, 3, 4)], {"factor": 2}, "multiple of 4"),
    ("pixel_unshuffle", [T(1, 2, 5, 8)], {"factor": 2}, "multiples of 2"),
    ("upsample_nearest", [T(1, 2, 3, 4)], {"scales": (2, 2, 2)}, "one per spatial dim"),
    ("upsample_nearest", [T(1, 2, 3, 4)], {"scales": (0,)}, "positive"),
    ("moe", [T(3, 8), T(4, 7)], {"num_experts": 4, "top_k": 2}, "router"),
    ("moe", [T(3, 8), T(4, 8)], {"num_experts": 4, "top_k": 5}, "top_k"),
    ("moe", [T(3, 8), T(4, 8), T(3, 16, 8)], {"num_experts": 4, "top_k": 1}, "lead with 4"),
])
def test_infer_bad(op, operands, attrs, match):
    with pytest.raises(ShapeError, match=match):
        infer(op, *operands, **attrs)


def test_pool_padding_limit_is_torchs():
    # torch's max_pool2d allows pad <= kernel // 2, whatever the dilation
    with pytest.raises(ShapeError, match="at most half"):
        infer("max_pool", T(1, 1, 5, 5), kernel=(2, 2), stride=(1, 1), padding=(2, 0), dilation=(3, 1))
    attrs = {"kernel": (2, 3), "stride": (1, 2), "padding": (1, 1), "dilation": (3, 2)}
    assert infer("max_pool", T(1, 1, 5, 5), **attrs) == T(1, 1, 4, 2)
    x = torch.randn(1, 1, 5, 5)
    torch.testing.assert_close(run_op("max_pool", [x], attrs), F.max_pool2d(x, (2, 3), (1, 2), 1, (3, 2)))


def test_get_op_unknown_suggests():
    with pytest.raises(UnknownOpError) as info:
        get_op("softmx")
    assert "unknown op 'softmx'" in str(info.value) and "softmax" in str(info.value)
    with pytest.raises(UnknownOpError) as info:
        get_op("zzzzzzzz")
    assert "did you mean" not in str(info.value)


def test_every_op_has_a_consistent_definition():
    for name, op in OPS.items():
        assert op.name == name
        assert op.min_operands >= 0
        assert op.max_operands is None or op.max_operands >= op.min_operands
        for key, spec in op.attrs.items():
            assert spec.kinds, (name, key)
            if not spec.required and spec.default is not None:
                assert isinstance(spec.default, spec.kinds), (name, key, spec.default)


# --------------------------------------------------------------- interpreter vs. torch
torch.manual_seed(0)
X = torch.randn(2, 3, 4)
Y = torch.randn(3, 4)
POS = torch.rand(2, 3, 4) + 0.5


@pytest.mark.parametrize("op,args,attrs,ref", [
    ("neg", [X], {}, lambda: -X),
    ("abs", [X], {}, lambda: X.abs()),
    ("exp", [X], {}, lambda: X.exp()),
    ("log", [POS], {}, lambda: POS.log()),
    ("sqrt", [POS], {}, lambda: POS.sqrt()),
    ("rsqrt", [POS], {}, lambda: POS.rsqrt()),
    ("reciprocal", [POS], {}, lambda: 1 / POS),
    ("tanh", [X], {}, lambda: X.tanh()),
    ("sigmoid", [X], {}, lambda: X.sigmoid()),
    ("erf", [X], {}, lambda: torch.erf(X)),
    ("sin", [X], {}, lambda: X.sin()),
    ("cos", [X], {}, lambda: X.cos()),
    ("floor", [X * 3], {}, lambda: (X * 3).floor()),
    ("relu", [X], {}, lambda: X.relu()),
    ("silu", [X], {}, lambda: F.silu(X)),
    ("gelu", [X], {}, lambda: F.gelu(X)),
    ("gelu", [X], {"approximate": "tanh"}, lambda: F.gelu(X, approximate="tanh")),
    ("clamp", [X], {"min": -0.5}, lambda: X.clamp(min=-0.5)),
    ("clamp", [X], {"min": -0.5, "max": 0.25}, lambda: X.clamp(-0.5, 0.25)),
    ("tril", [X], {"diagonal": -1}, lambda: X.tril(-1)),
    ("triu", [X], {"diagonal": 1}, lambda: X.triu(1)),
    ("logical_not", [X > 0], {}, lambda: ~(X > 0)),
    ("cast", [X * 10], {"dtype": "i32"}, lambda: (X * 10).to(torch.int32)),
    ("add", [X, Y], {}, lambda: X + Y),
    ("sub", [X, Y], {}, lambda: X - Y),
    ("mul", [X, Y], {}, lambda: X * Y),
    ("div", [X, Y], {}, lambda: X / Y),
    ("div", [X, Y], {"rounding_mode": "floor"}, lambda: torch.div(X, Y, rounding_mode="floor")),
    ("div", [X, Y], {"rounding_mode": "trunc"}, lambda: torch.div(X, Y, rounding_mode="trunc")),
    ("remainder", [X, Y], {}, lambda: torch.remainder(X, Y)),
    ("pow", [POS, Y], {}, lambda: POS ** Y),
    ("maximum", [X, Y], {}, lambda: torch.maximum(X, Y)),
    ("minimum", [X, Y], {}, lambda: torch.minimum(X, Y)),
    ("lt", [X, Y], {}, lambda: X < Y),
    ("ge", [X, Y], {}, lambda: X >= Y),
    ("logical_and", [X > 0, Y > 0], {}, lambda: (X > 0) & (Y > 0)),
    ("where", [X > 0, X, Y], {}, lambda: torch.where(X > 0, X, Y)),
    ("sum", [X], {"dims": (0, 2)}, lambda: X.sum((0, 2))),
    ("sum", [X], {"dims": ()}, lambda: X),
    ("mean", [X], {"dims": (1,), "keepdim": True}, lambda: X.mean(1, keepdim=True)),
    ("amax", [X], {"dims": (2,)}, lambda: X.amax(2)),
    ("amin", [X], {"dims": (0, 1)}, lambda: X.amin((0, 1))),
    ("prod", [X], {"dims": (0, 2)}, lambda: X.prod(2).prod(0)),
    ("var", [X], {"dims": (2,)}, lambda: X.var(2)),
    ("var", [X], {"dims": (1, 2), "correction": 0}, lambda: X.var((1, 2), correction=0)),
    ("any", [X > 1], {"dims": (1,)}, lambda: (X > 1).any(1)),
    ("argmax", [X], {"dim": 1}, lambda: X.argmax(1)),
    ("argmin", [X], {"dim": 2, "keepdim": True}, lambda: X.argmin(2, keepdim=True)),
    ("cumsum", [X], {"dim": 1}, lambda: X.cumsum(1)),
    ("softmax", [X], {"dim": 1}, lambda: X.softmax(1)),
    ("log_softmax", [X], {"dim": 2}, lambda: X.log_softmax(2)),
    ("layer_norm", [X, Y, Y * 2], {"normalized_rank": 2}, lambda: F.layer_norm(X, (3, 4), Y, 2 * Y)),
    ("rms_norm", [X, Y[0]], {"normalized_rank": 1, "eps": 1e-6},
     lambda: F.rms_norm(X, (4,), Y[0], 1e-6)),
    ("group_norm", [X, Y[:, 0], Y[:, 1]], {"groups": 3},
     lambda: F.group_norm(X, 3, Y[:, 0], Y[:, 1])),
    ("batch_norm", [X, Y[:, 0], POS[0, :, 0], Y[:, 1], Y[:, 2]], {},
     lambda: F.batch_norm(X, Y[:, 0], POS[0, :, 0], Y[:, 1], Y[:, 2], False)),
    ("matmul", [X, Y.T], {}, lambda: X @ Y.T),
    ("linear", [X, Y, Y[:, 0]], {}, lambda: F.linear(X, Y, Y[:, 0])),
    ("reshape", [X], {"shape": (4, 6)}, lambda: X.reshape(4, 6)),
    ("permute", [X], {"perm": (2, 0, 1)}, lambda: X.permute(2, 0, 1)),
    ("expand", [Y[:, :1]], {"shape": (2, 3, 5)}, lambda: Y[:, :1].expand(2, 3, 5)),
    ("slice", [X], {"dim": 2, "start": 1, "end": 4, "step": 2}, lambda: X[:, :, 1:4:2]),
    ("concat", [X, X * 2], {"dim": 1}, lambda: torch.cat([X, X * 2], 1)),
    ("pad", [X], {"pads": (0, 1, 2, 0, -1, 1), "value": 7.0},
     lambda: F.pad(X, (-1, 1, 2, 0, 0, 1), value=7.0)),
])
def test_interpreter_matches_torch(op, args, attrs, ref):
    out = run_op(op, args, attrs)
    expected = ref()
    assert out.dtype == expected.dtype and out.shape == expected.shape
    torch.testing.assert_close(out, expected, equal_nan=True)


def test_interpreter_conv_pool_attention_embedding_match_torch():
    torch.manual_seed(1)
    x = torch.randn(2, 4, 7, 6)
    w = torch.randn(6, 2, 3, 2)
    b = torch.randn(6)
    attrs = {"stride": (2, 1), "padding": (1, 2), "dilation": (2, 1), "groups": 2}
    torch.testing.assert_close(run_op("conv", [x, w, b], attrs),
                               F.conv2d(x, w, b, (2, 1), (1, 2), (2, 1), 2))
    pool = {"kernel": (3, 2), "stride": (2, 2), "padding": (1, 1), "ceil_mode": True}
    torch.testing.assert_close(run_op("max_pool", [x], pool), F.max_pool2d(x, (3, 2), 2, 1, 1, True))
    torch.testing.assert_close(run_op("avg_pool", [x], {**pool, "count_include_pad": False}),
                               F.avg_pool2d(x, (3, 2), 2, 1, True, False))
    q, k, v = torch.randn(2, 4, 5, 8), torch.randn(2, 2, 6, 8), torch.randn(2, 2, 6, 3)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=False, scale=0.3, enable_gqa=True)
    torch.testing.assert_close(run_op("attention", [q, k, v], {"scale": 0.3}), ref)
    mask = torch.rand(5, 6) > 0.3
    mask[:, 0] = True
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3, enable_gqa=True)
    torch.testing.assert_close(run_op("attention", [q, k, v, mask], {"scale": 0.3}), ref)
    q2, k2, v2 = torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 3)
    ref = F.scaled_dot_product_attention(q2[None], k2[None], v2[None], is_causal=True, scale=0.3)[0]
    torch.testing.assert_close(run_op("attention", [q2, k2, v2], {"scale": 0.3, "causal": True}), ref)
    table, idx = torch.randn(10, 4), torch.randint(0, 10, (2, 3))
    torch.testing.assert_close(run_op("embedding", [table, idx]), table[idx])
    sel = torch.tensor([3, 0, 3], dtype=torch.int32)
    torch.testing.assert_close(run_op("index_select", [x, sel], {"dim": 1}), x[:, [3, 0, 3]])
    img = torch.randn(1, 8, 3, 2)
    torch.testing.assert_close(run_op("pixel_shuffle", [img], {"factor": 2}), F.pixel_shuffle(img, 2))
    torch.testing.assert_close(run_op("pixel_unshuffle", [F.pixel_shuffle(img, 2)], {"factor": 2}), img)
    torch.testing.assert_close(run_op("upsample_nearest", [img], {"scales": (2, 3)}),
                               F.interpolate(img, scale_factor=(2, 3), mode="nearest"))


def test_source_ops():
    t = TensorType((2, 3), f32)
    g = Graph("src", (), (Node("c", "full", (), t, {"value": 0.5}),
                          Node("i", "iota", (), TensorType((4,), i64), {"start": 3, "step": -2}),
                          Node("s", "full", (), TensorType((), i1), {"value": True})), ("c", "i", "s"))
    verify(g)
    c, i, s = run_graph(g, [])
    assert torch.equal(c, torch.full((2, 3), 0.5))
    assert torch.equal(i, torch.tensor([3, 1, -1, -3]))
    assert s.shape == () and s.dtype == torch.bool and bool(s)


def test_run_graph_errors():
    from codesign.ir import InterpreterError
    g = Graph("g", (Input("x", T(2)), Input("w", T(2), InputKind.param, "w")),
              (Node("y", "add", ("x", "w"), T(2)),), ("y",))
    with pytest.raises(InterpreterError, match="takes 1 inputs"):
        run_graph(g, [])
    with pytest.raises(InterpreterError, match="expects shape"):
        run_graph(g, [torch.zeros(3)], {"w": torch.zeros(2)})
    with pytest.raises(InterpreterError, match="no value for param %w"):
        run_graph(g, [torch.zeros(2)])
    assert torch.equal(run_graph(g, [torch.ones(2)], {"w": torch.ones(2)})[0], torch.full((2,), 2.0))
    bad = Graph("g", (Input("x", T(2)),), (Node("y", "relu", ("x",), T(3)),), ("y",))
    with pytest.raises(InterpreterError, match="%y = relu"):
        run_graph(bad, [torch.zeros(2)])


# ------------------------------------------------------------------------------ affine
d0, d1, d2 = Dim(0), Dim(1), Dim(2)


@pytest.mark.parametrize("expr,text", [
    (d0 + 0, "d0"),
    (0 + d0, "d0"),
    (d0 * 1, "d0"),
    ((d0 * 2) * 3, "d0 * 6"),
    (3 * (d0 * 2), "d0 * 6"),
    (d0 * 0, "0"),
    (Const(2) + Const(3), "5"),
    (3 + d0, "d0 + 3"),
    ((d0 + 2) + 3, "d0 + 5"),
    ((d0 + 2) - 2, "d0"),
    (d0 - 3, "d0 - 3"),
    (d0 - d1, "d0 + d1 * -1"),
    (d0 + d1 * 4, "d0 + d1 * 4"),
    (d0 + (d1 + d2), "d0 + (d1 + d2)"),
    ((d0 + d1) + d2, "d0 + d1 + d2"),
    (d0 // 1, "d0"),
    (d0 // 4, "d0 floordiv 4"),
    ((d0 + d1) // 2, "(d0 + d1) floordiv 2"),
    (d0 % 3, "d0 mod 3"),
    (d0 % 1, "0"),
    ((d0 * 4) % 3, "(d0 * 4) mod 3"),
    ((d0 // 2) * 3, "(d0 floordiv 2) * 3"),
    (Const(7) // 2, "3"),
    (Const(-7) // 2, "-4"),
    (Const(-7) % 3, "2"),
])
def test_affine_folding_and_printing(expr, text):
    assert str(expr) == text


def test_affine_evaluate_and_map():
    e = (d0 * 3 + d1) // 2 - 1
    assert e.evaluate([3, 4]) == (3 * 3 + 4) // 2 - 1
    assert ((d0 - 5) % 3).evaluate([1]) == (1 - 5) % 3  # python (floor) semantics
    assert ((d0 - 5) // 3).evaluate([1]) == -2
    assert e.dims_used() == frozenset({0, 1})
    m = AffineMap.of(3, [d2, 0, d0 + d1])
    assert str(m) == "(d0, d1, d2) -> (d2, 0, d0 + d1)"
    assert m.evaluate((1, 2, 3)) == (3, 0, 3)
    assert m.dims_used() == frozenset({0, 1, 2})
    assert not m.is_projected_permutation
    assert AffineMap.of(3, [d2, 0, d0]).is_projected_permutation
    assert not AffineMap.of(2, [d0, d0]).is_projected_permutation
    assert str(AffineMap.identity(2)) == "(d0, d1) -> (d0, d1)"
    assert AffineMap.of(1, [d0 + 0]) == AffineMap.identity(1)  # folded maps compare equal
    with pytest.raises(ValueError):
        d0 // 0
    with pytest.raises(ValueError):
        d0 % -2


@pytest.mark.parametrize("expr,extents,expected", [
    (d0, [5], (0, 4)),
    (Const(3), [], (3, 3)),
    (d0 * 2 + d1 - 1, [3, 4], (-1, 6)),
    (d0 * -2, [3], (-4, 0)),
    (d0 // 3, [10], (0, 3)),
    (d0 % 4, [10], (0, 3)),
    (d0 % 8, [5], (0, 4)),
    ((d0 - 3) % 4, [2], (0, 3)),
])
def test_affine_bound(expr, extents, expected):
    assert bound(expr, extents) == expected
    # the bound is tight and sound on the box
    import itertools
    values = [expr.evaluate(p) for p in itertools.product(*map(range, extents))] or [expr.evaluate([])]
    lo, hi = expected
    assert lo <= min(values) and max(values) <= hi


def test_affine_nodes_are_the_folded_kinds():
    assert isinstance(d0 + d1, Add) and isinstance(d0 * 2, Mul)
    assert isinstance(d0 // 2, FloorDiv) and isinstance(d0 % 2, Mod)
    assert (d0 * 2) * 3 == Mul(d0, 6)


# --------------------------------------------------------------------------- types
def test_tensor_type_basics():
    t = TensorType((2, 3), DType.bf16)
    assert t.rank == 2 and t.numel == 6 and t.nbytes == 12
    assert str(t) == "bf16[2,3]"
    assert str(TensorType((), f32)) == "f32[]" and TensorType((), f32).numel == 1
    assert TensorType((), f32).nbytes == 4
    assert str(TensorType((4,), i1, "sram")) == "i1[4]@sram" and TensorType((4,), i1).nbytes == 4
    assert TensorType((0, 5), i64).nbytes == 0
    assert TensorType([2, 3], "f32") == TensorType((2, 3), f32)  # normalised on construction
    assert t.with_shape((6,)) == TensorType((6,), DType.bf16)
    assert t.with_dtype("f16") == TensorType((2, 3), f16)
    assert TensorType.of(torch.zeros(2, 1, dtype=torch.uint8)) == TensorType((2, 1), DType.u8)
    with pytest.raises(ValueError):
        TensorType((2,), "f8")
    with pytest.raises(Exception):
        t.shape = (1,)  # frozen


@pytest.mark.parametrize("dtype", list(DType))
def test_dtype_torch_roundtrip(dtype):
    assert DType.from_torch(dtype.torch) is dtype
    assert dtype.itemsize == torch.empty((), dtype=dtype.torch).element_size()
    assert dtype.is_float == dtype.torch.is_floating_point
    assert dtype.is_int == (not dtype.torch.is_floating_point and dtype is not DType.i1)


@pytest.mark.parametrize("bad", [torch.complex64, torch.float8_e4m3fn, torch.uint16])
def test_dtype_from_torch_errors(bad):
    with pytest.raises(TypeError, match="has no codesign element type") as info:
        DType.from_torch(bad)
    assert "torch.float32" in str(info.value)  # lists the supported ones


# ------------------------------------------------------------------------------- moe
MOE = """graph @moe(%x: f32[2,3,8], %router: f32[4,8] param, %w1: f32[4,16,8] param, %w2: f32[4,8,16] param) -> (f32[2,3,8]) {{
  %m = moe(%x, %router, %w1, %w2) {{normalize = {normalize}, num_experts = 4, top_k = {top_k}}} : f32[2,3,8] ({{
    graph @expert(%t: f32[6,8], %a: f32[16,8], %b: f32[8,16]) -> (f32[6,8]) {{
      %h = linear(%t, %a) : f32[6,16]
      %s = silu(%h) : f32[6,16]
      %o = linear(%s, %b) : f32[6,8]
      return %o
    }}
  }})
  return %m
}}
"""


@pytest.mark.parametrize("top_k,normalize", [(1, "true"), (2, "true"), (2, "false"), (4, "false")])
def test_moe_interpreter_matches_a_dense_reference(top_k, normalize):
    from codesign.ir import parse_graph
    g = verify(parse_graph(MOE.format(top_k=top_k, normalize=normalize)))
    torch.manual_seed(3)
    x = torch.randn(2, 3, 8)
    state = {"router": torch.randn(4, 8), "w1": torch.randn(4, 16, 8) * 0.3, "w2": torch.randn(4, 8, 16) * 0.3}
    (out,) = run_graph(g, [x], state)
    tokens = x.reshape(6, 8)
    probs = torch.softmax(tokens @ state["router"].T, dim=-1)
    expected = torch.zeros(6, 8)
    for t in range(6):
        weights, ids = probs[t].topk(top_k)
        if normalize == "true":
            weights = weights / weights.sum()
        for wgt, e in zip(weights, ids):
            y = F.linear(F.silu(F.linear(tokens[t], state["w1"][e])), state["w2"][e])
            expected[t] += wgt * y
    torch.testing.assert_close(out, expected.reshape(2, 3, 8), rtol=1e-4, atol=1e-5)


def test_monotone_in_is_conservative():
    """A pool's window map (stride * out + offset - pad) is monotone in the output column; a
    dim used twice or any mod is not claimed monotone (the row-wise pool then falls back)."""
    from codesign.ir.affine import Dim, monotone_in
    d0, d1 = Dim(0), Dim(1)
    assert monotone_in(d0 * 2 + d1 - 1, 0) and monotone_in((d0 + 3) // 2, 0) and monotone_in(d1, 0)
    assert not monotone_in(d0 * 2 + d0, 0)
    assert not monotone_in(d0 % 4, 0) and not monotone_in(d1 % 3 + d0, 0)


@pytest.mark.parametrize("heads,kv_heads,lq,lk,causal", [(4, 4, 9, 9, False), (4, 2, 8, 8, True), (2, 1, 5, 11, False)])
def test_attentions_library_form_means_the_reference(heads, kv_heads, lq, lk, causal):
    """On CUDA the attention op runs torch's fused SDPA where it means the same: checked here
    against the reference (on the CPU, where SDPA runs too) for GQA, causal and Lq != Lk."""
    from codesign.ir.ops.contraction import library_attention_applies, sdpa
    g = torch.Generator().manual_seed(heads * 100 + lk)
    q = torch.randn(2, heads, lq, 16, generator=g)
    k, v = (torch.randn(2, kv_heads, lk, 16, generator=g) for _ in range(2))
    assert library_attention_applies(q, k, [], causal)
    op = get_op("attention")
    attrs = op.attr_values({"scale": 0.3, "causal": causal})
    from codesign.ir.ops.registry import Call
    reference = op.run(Call([q, k, v], attrs, TensorType(tuple(q.shape[:-1]) + (16,), DType.f32)))
    assert torch.allclose(sdpa(q, k, v, 0.3, causal), reference, atol=1e-5, rtol=1e-5)


def test_attentions_library_form_is_refused_where_it_would_differ():
    from codesign.ir.ops.contraction import library_attention_applies
    q, k = torch.zeros(1, 2, 4, 8), torch.zeros(1, 2, 6, 8)
    assert not library_attention_applies(q, k, [], causal=True)  # SDPA aligns causal top-left
    assert not library_attention_applies(q, q, [torch.ones(4, 4, dtype=torch.bool)], causal=False)  # a masked row
    assert not library_attention_applies(q[0, 0], q[0, 0], [], causal=False)  # no head dim
