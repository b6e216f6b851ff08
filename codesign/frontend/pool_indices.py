"""The indices of a 2-d max-pool (`return_indices=True`), written with ops the IR already has.

No backend needs a new template: the window's elements are gathered by index tables
(constants built from `iota`, folded at compile time), compared with the pooled maximum,
and the winner's flat position in its input plane is looked up. The rule is eager's
(ATen's CPU kernel): the first in-bounds element equal to the maximum, in window order
(rows, then columns); if the window holds a NaN, the *last* NaN (eager updates on every NaN);
padding is never chosen, even when every element is -inf (eager keeps the first in-bounds
one). MaxUnpool and other users of the indices then see exactly eager's positions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from codesign.ir.types import DType, TensorType

if TYPE_CHECKING:
    from codesign.frontend.aten import Ctx, Val


def _table(c: Ctx, size: int, step: int, shape: tuple[int, ...]) -> Val:
    """0, step, 2·step, … as an i64 tensor laid along the one axis of `shape` that is not 1."""
    from codesign.frontend.aten import Val
    line = c.add("iota", [], {"start": 0, "step": step}, type=TensorType((size,), DType.i64))
    return Val(c.b.reshape(line, shape))


def _binary(c: Ctx, op: str, a: Val, b: Val | int) -> Val:
    from codesign.frontend.aten import tensor_operand
    return c.add(op, [a, tensor_operand(c, b, DType.i64) if isinstance(b, int) else b])


def max_pool_indices(c: Ctx, x: Val, values: Val, attrs: Mapping[str, object]) -> Val:
    """Eager's `max_pool2d(..., return_indices=True)[1]` for an NCHW `x` pooled into `values`."""
    from codesign.frontend.aten import Val
    n, ch, h, w = c.t(x).shape
    oh, ow = c.t(values).shape[2:]
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (tuple(attrs[k]) for k in ("kernel", "stride", "padding", "dilation"))
    k = kh * kw
    # rows and columns each window element reads, in the padded input's coordinates
    rows = _binary(c, "add", _table(c, oh, sh, (1, 1, oh, 1)), _table(c, kh, dh, (kh, 1, 1, 1)))
    cols = _binary(c, "add", _table(c, ow, sw, (1, 1, 1, ow)), _table(c, kw, dw, (1, kw, 1, 1)))
    padded_h, padded_w = (oh - 1) * sh + (kh - 1) * dh + 1, (ow - 1) * sw + (kw - 1) * dw + 1
    fill = float("-inf") if c.t(x).dtype.is_float else 0
    padded = c.add("pad", [x], {"pads": (0, 0, 0, 0, ph, max(padded_h - h - ph, 0), pw, max(padded_w - w - pw, 0)),
                                "value": fill})
    window = c.add("index", [padded, rows, cols], {"dim": 2})  # (N, C, KH, KW, OH, OW)
    in_rows, in_cols = _binary(c, "sub", rows, ph), _binary(c, "sub", cols, pw)
    inside = c.add("logical_and", [
        c.add("logical_and", [_binary(c, "ge", in_rows, 0), _binary(c, "lt", in_rows, h)]),
        c.add("logical_and", [_binary(c, "ge", in_cols, 0), _binary(c, "lt", in_cols, w)])])
    order = _table(c, k, 1, (k,))
    order = Val(c.b.reshape(order, (kh, kw, 1, 1)))
    best = Val(c.b.reshape(values, (n, ch, 1, 1, oh, ow)))
    # score: the last NaN beats everything, then the first element equal to the maximum
    zero = _binary(c, "mul", order, 0)
    score = c.add("where", [c.add("logical_and", [inside, c.add("eq", [window, best])]),
                            _binary(c, "sub", _binary(c, "mul", order, -1), -k), zero])
    if c.t(x).dtype.is_float:
        is_nan = c.add("logical_and", [inside, c.add("ne", [window, window])])
        score = c.add("where", [is_nan, _binary(c, "add", order, k), score])
    chosen = c.add("argmax", [Val(c.b.reshape(score, (n, ch, k, oh, ow)))], {"dim": 2, "keepdim": True})
    flat = _binary(c, "add", _binary(c, "mul", in_rows, w), in_cols)  # (KH, KW, OH, OW)
    flat = c.add("expand", [Val(c.b.reshape(flat, (1, 1, k, oh, ow)))], {"shape": (n, ch, k, oh, ow)})
    picked = c.add("gather", [flat, chosen], {"dim": 2})
    return Val(c.b.reshape(picked, (n, ch, oh, ow)))


__all__ = ["max_pool_indices"]
