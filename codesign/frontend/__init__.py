"""Frontend: bring PyTorch models into the codesign IR."""

from codesign.frontend.capture import (CaptureError, CapturedModel, UnsupportedOp,
                                       UnsupportedOpsError, capture)
from codesign.frontend.aten import register_converter, unregister_converter
from codesign.frontend.factory import ModelSpecError, load_factory
from codesign.frontend.signature import InputMismatchError, Signature

__all__ = ["CaptureError", "CapturedModel", "InputMismatchError", "ModelSpecError", "Signature", "UnsupportedOp",
           "UnsupportedOpsError", "capture", "load_factory", "register_converter", "unregister_converter"]
