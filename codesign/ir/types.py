"""Element and tensor types of the graph IR.

A `TensorType` is the static type of every SSA value: shape, element type and, once the
placement pass has run, the memory tier the value lives in. Types are frozen values so that
passes can share them freely. torch is imported on first use (`codesign.lazy`): the
text form, the verifier and the passes never need it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from math import prod
from typing import TYPE_CHECKING

from codesign.lazy import LazyModule

if TYPE_CHECKING:
    import torch
else:
    torch = LazyModule("torch")


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
    def int_range(self) -> tuple[int, int]:
        """The smallest and largest value of an integer type (as `torch.iinfo`, without torch)."""
        if not self.is_int:
            raise TypeError(f"{self.value} is not an integer type")
        bits = self.itemsize * 8
        return (0, 2 ** bits - 1) if self is DType.u8 else (-2 ** (bits - 1), 2 ** (bits - 1) - 1)

    @property
    def torch(self) -> torch.dtype:
        return getattr(torch, _TORCH_NAMES[self])

    @staticmethod
    def from_torch(dtype: torch.dtype) -> "DType":
        found = _FROM_TORCH.get(str(dtype)) if isinstance(dtype, torch.dtype) else None
        if found is None:
            raise TypeError(f"torch dtype {dtype} has no codesign element type; "
                            f"supported: {', '.join(_FROM_TORCH)}")
        return found


_ITEMSIZE = {DType.f64: 8, DType.f32: 4, DType.f16: 2, DType.bf16: 2, DType.i64: 8,
             DType.i32: 4, DType.i16: 2, DType.i8: 1, DType.u8: 1, DType.i1: 1}
_TORCH_NAMES = {DType.f64: "float64", DType.f32: "float32", DType.f16: "float16", DType.bf16: "bfloat16",
                DType.i64: "int64", DType.i32: "int32", DType.i16: "int16", DType.i8: "int8",
                DType.u8: "uint8", DType.i1: "bool"}
"""Each element type's torch dtype, by its attribute name (`torch.float32`), so that the
table needs no torch until a dtype is asked for."""
_FROM_TORCH = {f"torch.{name}": d for d, name in _TORCH_NAMES.items()}  # str(torch.float32) -> f32


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
