"""How a call of the model maps onto its graph, and what the call must write back.

A captured graph is functional: where the model's forward updates a buffer in place
(`self.counter += 1`, BatchNorm's running statistics) or an input (`x.add_(1)`), torch.export
lists the new value as an extra output (its graph signature's `buffers_to_mutate` /
`user_inputs_to_mutate`). A `Signature` keeps what eager does: the model's own inputs (name,
shape, dtype, checked on every call instead of cast), which graph runtime input each one
feeds, the buffers that are threaded through the graph as runtime inputs (their tensors are
the module's own, so every backend reads the current value), and, per graph output, whether
it is a user output or an update that `finish` copies back in place after the call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch

from codesign.ir.graph import Graph
from codesign.ir.types import TensorType


class InputMismatchError(TypeError):
    """A runtime input that is not what the model was compiled for (count, dtype, shape, device)."""


@dataclass(frozen=True)
class Arg:
    """One tensor argument of the model, as captured."""

    name: str
    type: TensorType


@dataclass(frozen=True)
class WriteBack:
    """A graph output that is an in-place update: of a buffer (or parameter), or of an input."""

    kind: str  # "buffer" or "input"
    target: str  # buffer: its state-dict key; input: the argument's name
    value: str | int  # buffer: the graph input it is threaded through; input: the argument's index

    def describe(self) -> str:
        return f"buffer '{self.target}'" if self.kind == "buffer" else f"input {self.value} '{self.target}'"


@dataclass(frozen=True, eq=False)
class Signature:
    """The calling convention of a captured model (see the module docstring)."""

    name: str
    args: tuple[Arg, ...]
    runtime: tuple[int | str, ...]  # per graph runtime input: an argument's index, or a threaded buffer's input name
    outputs: tuple[WriteBack | None, ...]  # per graph output: None for a user output
    buffers: Mapping[str, torch.Tensor] = field(default_factory=dict)  # threaded buffers by graph input name

    @staticmethod
    def plain(graph: Graph) -> "Signature":
        """A graph's own convention: its runtime inputs are the arguments, its outputs the results."""
        runtime = graph.runtime_inputs
        return Signature(graph.name, tuple(Arg(i.name, i.type) for i in runtime), tuple(range(len(runtime))),
                         (None,) * len(graph.outputs))

    @property
    def write_backs(self) -> tuple[WriteBack, ...]:
        return tuple(w for w in self.outputs if w is not None)

    def _where(self) -> str:
        return f"{self.name}({', '.join(a.name for a in self.args)})"

    def shapes_match(self, inputs: Sequence[torch.Tensor]) -> bool:
        """Whether `inputs` (checked but for their shapes) have the captured shapes."""
        return all(tuple(x.shape) == arg.type.shape for x, arg in zip(inputs, self.args))

    def check(self, inputs: Sequence[object], shapes: bool = True) -> None:
        """Raise `InputMismatchError` unless `inputs` are tensors of the captured shapes and
        dtypes, on one device (the threaded buffers' too): compiled code never casts.
        `shapes=False` leaves the shapes to the caller (which recompiles for new ones)."""
        where = self._where()
        if len(inputs) != len(self.args):
            raise InputMismatchError(f"{where}: takes {len(self.args)} input(s), got {len(inputs)}")
        for i, (x, arg) in enumerate(zip(inputs, self.args)):
            want = f"{_dtype(arg.type.dtype.torch)} {list(arg.type.shape)}"
            if not isinstance(x, torch.Tensor):
                raise InputMismatchError(f"{where}: input {i} '{arg.name}' is a {type(x).__name__}, "
                                         f"the model was compiled for a tensor {want}")
            if x.dtype != arg.type.dtype.torch:
                raise InputMismatchError(
                    f"{where}: input {i} '{arg.name}' is {_dtype(x.dtype)}, the model was compiled for {want}; "
                    f"compile with an example of that dtype (compiled code does not cast its inputs)")
            if shapes and tuple(x.shape) != arg.type.shape:
                raise InputMismatchError(
                    f"{where}: input {i} '{arg.name}' has shape {list(x.shape)}, the model was compiled for "
                    f"{want} (shapes are static); compile with an example of that shape")
        tensors = [(f"input {i} '{a.name}'", x) for i, (x, a) in enumerate(zip(inputs, self.args))]
        tensors += [(f"buffer '{name}'", t) for name, t in self.buffers.items()]
        devices = {str(t.device) for _, t in tensors}
        if len(devices) > 1:
            spread = ", ".join(f"{what} on {t.device}" for what, t in tensors)
            raise InputMismatchError(f"{where}: inputs on different devices ({spread}); "
                                     "put the inputs (and the model) on one device")

    def bind(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The graph's runtime inputs for a call with `inputs`."""
        return [inputs[r] if isinstance(r, int) else self.buffers[r] for r in self.runtime]

    def finish(self, inputs: Sequence[torch.Tensor], outs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Copy each update back into its buffer or input, as eager does; the user outputs."""
        if len(outs) != len(self.outputs):
            raise RuntimeError(f"{self._where()}: the program returned {len(outs)} outputs, its signature "
                               f"has {len(self.outputs)} (a pass changed the graph's outputs)")
        if not self.write_backs:
            return tuple(outs)
        targets = [self.buffers[w.value] if w.kind == "buffer" else inputs[w.value] for w in self.write_backs]
        storages = {t.untyped_storage().data_ptr() for t in targets}
        # a value that shares memory with something written below is read before the write
        outs = [o.clone() if o.untyped_storage().data_ptr() in storages else o for o in outs]
        with torch.no_grad():
            for target, (w, new) in zip(targets, [(w, o) for w, o in zip(self.outputs, outs) if w is not None]):
                target.copy_(new)
        return tuple(o for w, o in zip(self.outputs, outs) if w is None)

    def call(self, program: Callable[..., object], inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Check, bind, run `program` on the runtime inputs, write back; the user outputs."""
        self.check(inputs)
        outs = program(*self.bind(inputs))
        return self.finish(inputs, list(outs) if isinstance(outs, (tuple, list)) else [outs])


def _dtype(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
