"""Names imported on first use, so that commands which do not need a heavy module never load it.

- `lazy_attributes`: a package's public names (PEP 562). `import codesign` and `import
  codesign.experts` then cost nothing, so commands that need neither torch nor the solvers
  (`codesign --help`, `codesign targets list`) start fast, while `codesign.compile` and
  `codesign.experts.schedule` still read as plain attributes.
- `LazyModule`: a module (torch) that is imported on its first attribute read. The IR
  refers to torch in every op definition (its reference semantics) and in the interpreter,
  yet parsing, printing, verifying and the passes never call torch, so `codesign opt` on
  IR text runs without importing it (~8 s on a loaded machine).
- `LazyCallable`: a module's callable (`torch.neg`) named at import time — an op's torch
  reference — and imported on its first call.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Mapping


def lazy_attributes(package: str, namespace: dict[str, Any],
                    exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`(__getattr__, __dir__)` for `package`, whose name `n` is `exports[n]`'s attribute `n`.

    `exports` maps a public name to the module that defines it (absolute, or relative to
    `package` when it starts with a dot). A name is imported once: the first lookup stores it
    in the package's `namespace`, so later reads do not come back here.
    """
    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__


class LazyModule:
    """Stands for the module `name` and imports it on the first attribute read (`torch.add`,
    `torch.float32`); later reads go straight to the module. Unlike `importlib.util.LazyLoader`
    it puts nothing in `sys.modules`, so "torch was not imported" stays checkable there.

    Modules bind it under the module's usual name behind `TYPE_CHECKING`, so type checkers
    still see the real module:

        if TYPE_CHECKING:
            import torch
        else:
            torch = LazyModule("torch")
    """

    __slots__ = ("_name", "_module")

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        module = self._module
        if module is None:
            module = self._module = importlib.import_module(self._name)
        return getattr(module, attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}{' (imported)' if self._module is not None else ''}>"


@dataclass(frozen=True)
class LazyCallable:
    """`module.path` (a dotted path inside the module, `nn.functional.silu`), imported on the
    first call: a reference an op definition holds at import time without importing torch."""

    module: str
    path: str

    def resolve(self) -> Callable[..., Any]:
        target: Any = importlib.import_module(self.module)
        for part in self.path.split("."):
            target = getattr(target, part)
        return target

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"{self.module}.{self.path}"


def torch_fn(path: str) -> LazyCallable:
    """`torch.<path>` as a `LazyCallable`: `torch_fn("neg")`, `torch_fn("nn.functional.silu")`."""
    return LazyCallable("torch", path)
