"""Lazy package attributes (PEP 562): a package's public names, imported on first use.

`import codesign` and `import codesign.experts` then cost nothing, so commands that need
neither torch nor the solvers (`codesign --help`, `codesign targets list`) start fast, while
`codesign.compile` and `codesign.experts.schedule` still read as plain attributes.
"""

from __future__ import annotations

import importlib
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
