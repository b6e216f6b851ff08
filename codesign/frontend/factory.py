"""Load a model factory named `path/to/file.py:factory` (the CLI's way to name a model)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch


class ModelSpecError(ValueError):
    pass


def load_factory(spec: str) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    """Import `file.py` and call `factory()`, which returns `(model, example_inputs)`."""
    path_text, sep, factory_name = spec.rpartition(":")
    if not sep or not path_text or not factory_name:
        path_text, factory_name = spec, None
    path = Path(path_text)
    if not path.is_file():
        raise ModelSpecError(f"model file {path} does not exist (expected path/to/file.py:factory)")
    module_name = f"codesign_model_{abs(hash(str(path.resolve())))}"
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise ModelSpecError(f"{path} is not an importable Python file")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)  # as `python file.py` would: siblings of the file import
    try:
        loader_spec.loader.exec_module(module)
    finally:
        sys.path.remove(folder)
    factories = [n for n, f in vars(module).items()
                 if callable(f) and not n.startswith("_") and getattr(f, "__module__", None) == module_name
                 and not isinstance(f, type)]
    if factory_name is None:
        if not factories:
            raise ModelSpecError(f"{path} defines no factory function; add one that returns "
                                 f"(model, example_inputs) and name it as {path}:NAME")
        if len(factories) != 1:
            raise ModelSpecError(f"{path} defines several factories ({', '.join(sorted(factories))}); "
                                 f"name one as {path}:NAME")
        factory_name = factories[0]
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise ModelSpecError(f"{path} has no factory {factory_name!r}; it defines: {', '.join(sorted(factories))}")
    result = factory()
    if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], torch.nn.Module)):
        raise ModelSpecError(f"{spec}: the factory must return (model, example_inputs)")
    model, inputs = result
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    return model, tuple(inputs)
