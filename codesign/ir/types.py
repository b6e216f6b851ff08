"""Element and tensor types of the graph IR.

A `TensorType` is the static type of every SSA value: shape, element type and, once the
placement pass has run, the memory tier the value lives in. Types are frozen values so that
passes can share them freely.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from math import prod

import torch


class DType(str, Enum):
    """Element types, spelled as in MLIR (`f32`, `bf16`, `i64`, `i1`)."""

    f64 = "f64"
    f32 = "f32"
    f16 = "f16"
    bf16 = "bf16"
    i64 = "i64"
    i32 = "i32"
    i16 = "i16"
    i8 = "i8"
    u8 = "u8"
    i1 = "i1"

    @property
    def itemsize(self) -> int:
        """Bytes per element (`i1` is stored as one byte, as torch.bool is)."""
        return _ITEMSIZE[self]

    @property
    def is_float(self) -> bool:
        return self in (DType.f64, DType.f32, DType.f16, DType.bf16)

    @property
    def is_int(self) -> bool:
        return not self.is_float and self is not DType.i1

    @property
    def torch(self) -> torch.dtype:
        return _TO_TORCH[self]

    @staticmethod
    def from_torch(dtype: torch.dtype) -> "DType":
        try:
            return _FROM_TORCH[dtype]
        except KeyError:
            raise TypeError(f"torch dtype {dtype} has no codesign element type; "
                            f"supported: {', '.join(str(d) for d in _FROM_TORCH)}") from None


_ITEMSIZE = {DType.f64: 8, DType.f32: 4, DType.f16: 2, DType.bf16: 2, DType.i64: 8,
             DType.i32: 4, DType.i16: 2, DType.i8: 1, DType.u8: 1, DType.i1: 1}
_TO_TORCH = {DType.f64: torch.float64, DType.f32: torch.float32, DType.f16: torch.float16,
             DType.bf16: torch.bfloat16, DType.i64: torch.int64, DType.i32: torch.int32,
             DType.i16: torch.int16, DType.i8: torch.int8, DType.u8: torch.uint8,
             DType.i1: torch.bool}
_FROM_TORCH = {v: k for k, v in _TO_TORCH.items()}


MAX_TENSOR_BYTES = 2 ** 50
"""The largest tensor (and dimension) the IR describes: 1 PiB. Byte counts, offsets and the
placement ILP's integer coefficients then stay far inside 64 bits; `f32[99999999999999,
99999999999]` is a mistake, refused with `size_problem`'s reason."""


def size_problem(shape: tuple[int, ...], dtype: "DType") -> str | None:
    """Why a tensor of this shape and element type is too large for the IR (None: it is not)."""
    for dim in shape:
        if dim > MAX_TENSOR_BYTES:
            return f"dimension {dim} is larger than the limit of 2**50 = {MAX_TENSOR_BYTES}"
    numel = prod(shape)
    if numel * DType(dtype).itemsize > MAX_TENSOR_BYTES:
        return (f"{numel} elements of {DType(dtype).itemsize} bytes exceed the limit of 2**50 bytes (1 PiB) "
                "for one tensor")
    return None


@dataclass(frozen=True)
class TensorType:
    """Shape and element type of a value; `tier` is set by placement (None before)."""

    shape: tuple[int, ...]
    dtype: DType
    tier: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "dtype", DType(self.dtype))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> int:
        return prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize

    def with_shape(self, shape: tuple[int, ...]) -> "TensorType":
        return replace(self, shape=tuple(shape))

    def with_dtype(self, dtype: DType) -> "TensorType":
        return replace(self, dtype=DType(dtype))

    def __str__(self) -> str:
        text = f"{self.dtype.value}[{','.join(str(s) for s in self.shape)}]"
        return f"{text}@{self.tier}" if self.tier else text

    @staticmethod
    def of(tensor: torch.Tensor) -> "TensorType":
        return TensorType(tuple(tensor.shape), DType.from_torch(tensor.dtype))
