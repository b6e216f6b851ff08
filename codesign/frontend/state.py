"""Live model state: the graph's weights and buffers read from the module, not copied.

Eager PyTorch reads `self.l1.weight` on every call, so an in-place update
(`weight.data.mul_(2)`, an optimizer step, `load_state_dict`), a new tensor behind the same
parameter (`weight.data = t`) and a new parameter object (`load_state_dict(..., assign=True)`,
`model.l1.weight = nn.Parameter(t)`) all show in the next call. A `LiveState` maps graph
input names to *where* each tensor lives in the module (the owner submodule and the
attribute) and looks it up on every access, so it sees all three. Tensors that are not the
module's own at capture (constants made while tracing) are kept as captured: nothing
outside codesign can change them.

Backends that hold pointers or device copies of the weights need to know when to take
them again; `stamp()` is a cheap fingerprint of every tensor (identity of its storage,
version counter, shape, dtype, device; contiguity) that changes whenever what a backend holds
could be stale. `check()` refuses a tensor whose shape or dtype no longer matches the
compiled graph, naming it, instead of running generated code on memory of another size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping

import torch

from codesign.ir.graph import Graph


class StateMismatchError(TypeError):
    """A parameter or buffer that no longer has the shape, dtype or device the graph was compiled for."""


@dataclass(frozen=True)
class Slot:
    """Where a state tensor lives: `owner.<attr>` in its `_parameters`, `_buffers` or `__dict__`."""

    owner: torch.nn.Module
    attr: str
    table: str  # "_parameters", "_buffers" or "__dict__" (a plain tensor attribute)

    def get(self) -> torch.Tensor:
        value = getattr(self.owner, self.table).get(self.attr)
        if not isinstance(value, torch.Tensor):
            raise StateMismatchError(f"'{self.attr}' of {type(self.owner).__name__} is no longer a tensor "
                                     f"({type(value).__name__}); compile the model again")
        return value


def find_slot(model: torch.nn.Module, key: str, tensor: torch.Tensor) -> Slot | None:
    """The slot of state-dict key `key` in `model` when it holds `tensor` itself, else None."""
    path, _, attr = key.rpartition(".")
    try:
        owner = model.get_submodule(path) if path else model
    except AttributeError:
        return None
    for table in ("_parameters", "_buffers", "__dict__"):
        if getattr(owner, table).get(attr) is tensor:
            return Slot(owner, attr, table)
    return None


class LiveState(Mapping[str, torch.Tensor]):
    """Graph input name → the module's current tensor (see the module docstring)."""

    def __init__(self, slots: Mapping[str, Slot], fixed: Mapping[str, torch.Tensor] | None = None):
        self._slots = dict(slots)
        self._fixed = dict(fixed or {})

    @staticmethod
    def of(model: torch.nn.Module, graph: Graph, state: Mapping[str, torch.Tensor],
           keys: Mapping[str, str] | None = None) -> "LiveState":
        """`state` (input name → tensor at capture) made live: each tensor that is `model`'s own
        (found under its state-dict key, the graph input's `source`, or `keys[name]`) is read
        from the module from now on; the others stay as captured."""
        sources = {i.name: i.source for i in graph.inputs if i.source}
        sources.update(keys or {})
        slots, fixed = {}, {}
        for name, tensor in state.items():
            slot = find_slot(model, sources[name], tensor) if name in sources else None
            if slot is None:
                fixed[name] = tensor
            else:
                slots[name] = slot
        return LiveState(slots, fixed)

    def __getitem__(self, name: str) -> torch.Tensor:
        slot = self._slots.get(name)
        return slot.get() if slot is not None else self._fixed[name]

    def __iter__(self) -> Iterator[str]:
        yield from self._slots
        yield from self._fixed

    def __len__(self) -> int:
        return len(self._slots) + len(self._fixed)

    def __contains__(self, name: object) -> bool:
        return name in self._slots or name in self._fixed

    def __repr__(self) -> str:
        return f"LiveState({len(self._slots)} read from the module, {len(self._fixed)} fixed)"

    @property
    def live(self) -> tuple[str, ...]:
        """The names read from the module on every access (the others are fixed)."""
        return tuple(self._slots)

    def stamp(self) -> tuple | None:
        """A fingerprint that changes whenever a tensor's storage, contents (version counter),
        layout, dtype or device may have changed; None when some tensor is not contiguous
        (a backend holds a contiguous copy of it, which a `.data` update would bypass) or is
        an inference tensor (it has no version counter): then take them again on every call."""
        return _stamp(slot.get() for slot in self._slots.values())

    def check(self, graph: Graph) -> None:
        """Raise `StateMismatchError` when a live tensor's shape or dtype is not its graph input's."""
        for inp in graph.inputs:
            slot = self._slots.get(inp.name)
            if slot is None:
                continue
            t = slot.get()
            want = inp.type
            if tuple(t.shape) != want.shape or t.dtype != want.dtype.torch:
                raise StateMismatchError(
                    f"{inp.kind.value} '{inp.source or inp.name}' is now {str(t.dtype).removeprefix('torch.')} "
                    f"{list(t.shape)}, @{graph.name} was compiled for {want.dtype.value} {list(want.shape)}; "
                    "compile the model again after changing a weight's shape or dtype")


def stamp_of(state: Mapping[str, torch.Tensor]) -> tuple | None:
    """`LiveState.stamp` for any mapping (a plain dict of tensors: in-place and `.data` updates)."""
    return state.stamp() if isinstance(state, LiveState) else _stamp(state.values())


def _stamp(tensors: Iterable[torch.Tensor]) -> tuple | None:
    parts = []
    for t in tensors:
        if not t.is_contiguous() or t.is_inference():
            return None
        parts.append((t.data_ptr(), t._version, t.shape, t.dtype, t.device))
    return tuple(parts)
