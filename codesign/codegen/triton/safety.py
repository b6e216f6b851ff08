"""Run-time checks in Triton kernels (`codesign.codegen.checks`): gathered indices, divisors.

`tl.device_assert` does not run under every mode (the interpreter, some builds), so a
kernel with checks takes one more pointer, `err_ptr`: an int64 buffer of three slots per
check site (a flag, the largest and the smallest offending value). A program whose tile
holds a bad lane raises the flag with one scalar `tl.atomic_max` (a branch on a reduction
over the tile, so good tiles do no atomics), and computes on with a safe value: coordinate
0 (the read stays inside the buffer), divisor 1. The generated wrapper reads the buffers
once, after the launches (`checks.check_buffer`), and raises eager's `IndexError` /
`RuntimeError: ZeroDivisionError` naming the op.

`INDEX_CHECKS` is on while kernels are generated unless the wrapper turns it off
(`check_indices=False`: the coordinates are then used as they are, unchecked).
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

from codesign.codegen.checks import DIVISION, INDEX, Site, data_dependent, reported

if TYPE_CHECKING:
    from codesign.codegen.triton.kernels import KernelWriter

SLOTS = 3  # per site: flag, max and min of the offending values
INDEX_CHECKS: ContextVar[bool] = ContextVar("codesign_triton_index_checks", default=True)


@contextmanager
def index_checks(enabled: bool):
    """Generate kernels with (or without) index checks inside this block."""
    token = INDEX_CHECKS.set(bool(enabled))
    try:
        yield
    finally:
        INDEX_CHECKS.reset(token)


def add_site(w: "KernelWriter", site: Site) -> int:
    sites = w.__dict__.setdefault("sites", [])
    if site not in sites:
        sites.append(site)
    return sites.index(site)


def flag(w: "KernelWriter", site: Site, bad: str, value: str | None = None) -> None:
    """Record `site` when any lane of the tile `bad` (a boolean text) holds; `value`: the
    offending value per lane (an index), reduced to its extremes."""
    s = SLOTS * add_site(w, site)
    w.emit(f"if tl.max({bad}.to(tl.int32), axis=None) > 0:")
    w.depth += 1
    w.emit(f"tl.atomic_max(err_ptr + {s}, 1)")
    if value is not None:
        shown = w.assign(f"tl.where({bad}, {value}, 0).to(tl.int64)", "badv")
        w.emit(f"tl.atomic_max(err_ptr + {s + 1}, tl.max({shown}, axis=None))")
        w.emit(f"tl.atomic_min(err_ptr + {s + 2}, tl.min({shown}, axis=None))")
    w.depth -= 1


def checked_coordinate(w: "KernelWriter", body, load, pos: int, text: str, mask: str | None) -> str:
    """Coordinate `pos` of the indexed `load` (its text `text`; `mask`: the lanes that read):
    a data-dependent one compared with its extent, out-of-range lanes flagged and read at 0."""
    e = load.index[pos]
    if not INDEX_CHECKS.get() or not data_dependent(e) or body.node is None:
        return text
    name = body.node.operands[load.operand]
    extent = w.types[name].shape[pos]
    raw, negative = reported(e)
    shown = text if raw is e else body.value(raw).text
    cond = f"({text} < 0) | ({text} >= {extent})"
    bad = w.assign(f"({cond}) & ({mask})" if mask else f"({cond})", "bad")
    flag(w, Site(INDEX, body.node.name, body.node.op, name, pos, extent, negative), bad, shown)
    return w.assign(f"tl.where({bad}, 0, {text})", "idx")


def division_flag(w: "KernelWriter", body, mask: str | None):
    """A callback for `overrides.Operands.flag`: records a zero divisor of `body`'s node."""
    node = body.node

    def record(zero: str) -> None:
        done = body.__dict__.setdefault("_zero_divisors", set())
        if zero in done:  # one node's div and fmod of one divisor (floor division): one check
            return
        done.add(zero)
        bad = w.assign(f"({zero}) & ({mask})" if mask else f"({zero})", "bad")
        flag(w, Site(DIVISION, node.name if node else "?", node.op if node else "?"), bad)
    return record


__all__ = ["INDEX_CHECKS", "SLOTS", "add_site", "checked_coordinate", "division_flag", "flag", "index_checks"]
