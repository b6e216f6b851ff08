"""Generated C++ shares the process politely with torch's own OpenMP threads.

A generated library links the system's libgomp. When torch's wheel ships its runtime under
the same soname (`libgomp.so.1`) the loader binds the library to it: one thread pool, the
one torch uses. When torch's runtime is a renamed copy (the PyPI wheels' `libgomp-<hash>`),
the library starts a second pool, and libgomp's threads spin after every parallel region
(300,000 spins by default, for ever with `OMP_WAIT_POLICY=active`) on cores torch's threads
need: eager PyTorch after a compiled call ran 1.35x slower on a quiet machine and up to
~500x on a loaded one (issue 16). So:

- `load` opens a library with `OMP_WAIT_POLICY=PASSIVE` in the environment (workers sleep
  as soon as a region ends) unless the user set `OMP_WAIT_POLICY` or `GOMP_SPINCOUNT`;
  libgomp reads its environment once, when it is first loaded, and the variable is removed
  again right after, so nothing else in the process sees it. A runtime already running
  (torch's, shared) keeps its settings: it is torch's pool, no second one competes.
- `set_threads` gives the library's runtime torch's thread count
  (`torch.get_num_threads()`), so both pools are the same size; `CppModule` calls it before
  each run (it is per calling thread in OpenMP).

No torch import here: a test loads this module in a process that has no torch, so that the
library's own libgomp starts under `load`.
"""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path

POLICY = "OMP_WAIT_POLICY"
USER_SETTINGS = (POLICY, "GOMP_SPINCOUNT")
"""Environment variables by which a user has chosen the wait policy; then it is theirs."""

_ENV_LOCK = threading.Lock()  # os.environ is process-wide: one load at a time changes it


def load(path: str | Path) -> ctypes.CDLL:
    """dlopen `path` with passive OpenMP waiting, unless the user chose a policy (see above)."""
    with _ENV_LOCK:
        if any(name in os.environ for name in USER_SETTINGS):
            return ctypes.CDLL(str(path))
        os.environ[POLICY] = "PASSIVE"
        try:
            return ctypes.CDLL(str(path))
        finally:
            del os.environ[POLICY]


def set_threads(lib: ctypes.CDLL, count: int) -> None:
    """`omp_set_num_threads(count)` in the OpenMP runtime `lib` is bound to (this thread)."""
    setter = getattr(lib, "omp_set_num_threads", None)
    if setter is not None:
        setter(ctypes.c_int(max(int(count), 1)))


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def runtime_of(lib: ctypes.CDLL) -> str | None:
    """The file of the OpenMP runtime `lib` calls (torch's when they share one), or None."""
    symbol = getattr(lib, "omp_get_max_threads", None)
    if symbol is None:
        return None
    info = _DlInfo()
    libc = ctypes.CDLL(None)
    if not libc.dladdr(ctypes.cast(symbol, ctypes.c_void_p), ctypes.byref(info)) or not info.dli_fname:
        return None
    return os.path.realpath(info.dli_fname.decode())
