"""Frontend: bring PyTorch models into the codesign IR."""

from codesign.frontend.capture import (CaptureError, CapturedModel, UnsupportedOp,
                                       UnsupportedOpsError, capture)
from codesign.frontend.factory import ModelSpecError, load_factory

__all__ = ["CaptureError", "CapturedModel", "ModelSpecError", "UnsupportedOp", "UnsupportedOpsError",
           "capture", "load_factory"]
