"""codesign: a hardware co-design compiler and dataflow mapper for PyTorch models.

The public names load on first use (`codesign.lazy`), so `import codesign` imports neither
torch nor the solvers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from codesign.lazy import lazy_attributes

__version__ = "0.1.0"

if TYPE_CHECKING:  # for type checkers; at run time __getattr__ imports them
    from codesign.compiler import CompiledModule, compile
    from codesign.explore import sweep
    from codesign.frontend import CapturedModel, capture, load_factory
    from codesign.targets import Target, load_target

__all__ = ["CapturedModel", "CompiledModule", "Target", "__version__", "capture", "compile",
           "load_factory", "load_target", "sweep"]

__getattr__, __dir__ = lazy_attributes(__name__, globals(), {
    "CapturedModel": "codesign.frontend", "capture": "codesign.frontend", "load_factory": "codesign.frontend",
    "CompiledModule": "codesign.compiler", "compile": "codesign.compiler",
    "Target": "codesign.targets", "load_target": "codesign.targets", "sweep": "codesign.explore",
})
