"""codesign: a hardware co-design compiler and dataflow mapper for PyTorch models."""

__version__ = "0.1.0"

from codesign.frontend import CapturedModel, capture, load_factory  # noqa: E402
from codesign.compiler import CompiledModule, compile  # noqa: E402
from codesign.targets import Target, load_target  # noqa: E402

__all__ = ["CapturedModel", "CompiledModule", "Target", "__version__", "capture", "compile",
           "load_factory", "load_target"]
