"""Run-time checks in generated code: gather indices out of range, integer division by zero.

Generated code computes what eager computes or raises as eager does; it never reads
outside a buffer and never traps. Two things depend on the data, so both backends check
them while the kernels run and the host raises afterwards:

- **Indices** (`Load` at data-dependent coordinates: embedding, index_select, index). Each
  such coordinate is compared with the operand's extent; a bad one is replaced by 0 (so the
  read stays inside the buffer) and recorded; after the kernels the call raises
  `IndexError` naming the op, the index value and the valid range (eager raises
  `IndexError` too). On by default; `check_indices=False` (a backend option of `cpp` and
  `triton`, or `compile(..., check_indices=False)`) leaves the comparisons out: then an
  out-of-range index reads whatever lies there (garbage) or crashes the process.
- **Integer `div` / `fmod`** (`//`, `%`, `torch.div(..., rounding_mode=...)` on integers).
  A zero divisor gives 0 and is recorded, and the call raises `RuntimeError:
  ZeroDivisionError`, as eager does on the CPU; `INT_MIN // -1` wraps to `INT_MIN` and
  `INT_MIN % -1` is 0 (torch's floor division and remainder on the CPU; x86 would trap).
  Always on: a divide costs far more than its compare, and the alternative is SIGFPE.

A *site* (`Site`) is one checked coordinate or divide: the first failing site is what the
error names. The C++ unit numbers sites per kernel function (so kernels that dedupe stay
one function) and per kernel call, and checks a coordinate that is a function of one index
element in a pass over the index operand before the kernel's loops (`cpp/exprs.precheck`),
so the gather loops stay as unchecked code would be; Triton numbers them per kernel, with
one small int64 buffer of three slots per site (a flag, the largest and the smallest
offending value) that the wrapper reads once after the launches (`triton/safety.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

from codesign.ir.scalar import Apply, Expr, Load, Prim, walk

INDEX, DIVISION = 1, 2
"""Error codes (the C++ unit's return value; the kind of a `Site`)."""


@dataclass(frozen=True)
class Site:
    """One checked place: coordinate `dim` of operand `operand` (extent `extent`) read by
    `%node = op(...)`, or one integer divide of that node's body."""

    kind: int  # INDEX | DIVISION
    node: str
    op: str
    operand: str = ""
    dim: int = 0
    extent: int = 0
    negative: bool = False  # the op counts a negative index from the end (`index`): -extent is valid

    def error(self, value: int | None = None) -> Exception:
        """The exception eager would raise here (its type; a message naming the op)."""
        if self.kind == DIVISION:
            return RuntimeError(f"ZeroDivisionError: integer division by zero in %{self.node} = {self.op}(...)")
        low = -self.extent if self.negative else 0
        shown = "an index" if value is None else f"index {value}"
        return IndexError(f"{shown} is out of range for dimension {self.dim} of %{self.operand} (size "
                          f"{self.extent}) in %{self.node} = {self.op}(...): valid indices are {low} to "
                          f"{self.extent - 1}")


def data_dependent(e: Expr) -> bool:
    """Does `e` read an operand (so its value is only known at run time)?"""
    return any(isinstance(x, Load) for x in walk(e))


def reported(e: Expr) -> tuple[Expr, bool]:
    """The index value to name in an error for coordinate `e`, and whether negatives wrap:
    for `select(p < 0, p + n, p)` (a negative index counted from the end) the raw `p`."""
    if (isinstance(e, Apply) and e.prim is Prim.select and isinstance(cond := e.args[0], Apply)
            and cond.prim is Prim.lt and isinstance(add := e.args[1], Apply) and add.prim is Prim.add
            and cond.args[0] == e.args[2] == add.args[0]):
        return e.args[2], True
    return e, False


def is_int_division(prim: Prim, dtype) -> bool:
    """An integer `div` / `fmod`: the primitives that trap (or give garbage) on a zero divisor."""
    return prim in (Prim.div, Prim.fmod) and not dtype.is_float and dtype.value != "i1"


def failure(code: int, site: Site | None, value: int | None, where: str) -> Exception:
    """The exception for a failed run: `site`'s (eager's type) or, unknown, a generic one."""
    if site is not None:
        return site.error(value)
    if code == INDEX:
        return IndexError(f"{where}: an index is out of range")
    if code == DIVISION:
        return RuntimeError(f"ZeroDivisionError: integer division by zero in {where}")
    return RuntimeError(f"{where}: generated code failed with code {code}")


def cpp_failure(lib, rc: int, checks, where: str) -> Exception:
    """The exception for a C++ `run` that returned `rc`: `codesign_error` of the loaded unit
    `lib` says which kernel call (an index into `checks`, `CppSource.checks`), which site of
    it and what value failed."""
    import ctypes
    info = (ctypes.c_int64 * 3)()
    code = lib.codesign_error(info)
    call, site, value = info[0], info[1], info[2]
    found = checks[call][site] if 0 <= call < len(checks) and 0 <= site < len(checks[call]) else None
    return failure(code or rc, found, value, where)


def check_buffer(err, kernels) -> None:
    """Raise for the first failed site in a Triton run's error buffer (int64: three slots per
    site, a flag and the largest and smallest offending value, `triton.safety`); `kernels`:
    (offset, sites, kernel name) per checked kernel, in launch order. One host read."""
    values = err.tolist()
    for offset, sites, name in kernels:
        for s, site in enumerate(sites):
            flag, high, low = values[offset + 3 * s: offset + 3 * s + 3]
            if flag:
                value = (high if high > 0 or low == 0 else low) if site.kind == INDEX else None
                raise failure(site.kind, site, value, f"Triton kernel {name}")


__all__ = ["DIVISION", "INDEX", "Site", "check_buffer", "cpp_failure", "data_dependent", "failure",
           "is_int_division", "reported"]
