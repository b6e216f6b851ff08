"""Build a translation unit with the system compiler, cached on disk, and load it.

GEMMs go through BLAS when one is found: the `scipy-openblas32` wheel (OpenBLAS with
`scipy_`-prefixed symbols, installable from PyPI with no system packages) is linked with
an rpath to its folder and the source is compiled with `-DCODESIGN_BLAS`; without the
wheel, or with `CODESIGN_BLAS=0` in the environment, the generated code's own packed GEMM
runs. The cache key hashes the IR text, the target name, the compiler's version line, the
host CPU (the build uses -march=native), codesign's version, the BLAS and the generated
source; a hit skips the compiler entirely. The cache (`codesign.codegen.cache`, shared with
the Triton backend) lives in `$CODESIGN_CACHE_DIR/cpp` or `~/.cache/codesign/cpp`, one folder
per key: the library is loaded only after its sha256 matches the entry's manifest (else it
is rebuilt, with a warning), entries are published atomically, and the cache is bounded
(`$CODESIGN_CACHE_MAX_BYTES`, least recently used evicted). A compiler that cannot run, a
failed compile and a library that cannot be loaded are `CodegenError`s naming the file.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from codesign.codegen import CodegenError
from codesign.codegen.cache import TMP_PREFIX, Cache
from codesign.codegen.cpp import openmp

CXX_FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++17",
             "-fno-math-errno", "-fno-trapping-math", "-w")


CACHE = Cache("cpp")


def cache_dir() -> Path:
    """Where C++ entries live: `$CODESIGN_CACHE_DIR/cpp` or `~/.cache/codesign/cpp` (checked:
    a folder others can write is refused for a private temporary one, with a warning)."""
    return CACHE.directory()


def compiler() -> str:
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if not cxx:
        raise CodegenError("no C++ compiler found (install g++ or set CXX)")
    return cxx


@functools.lru_cache(maxsize=None)
def compiler_version(cxx: str) -> str:
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=False)
    except OSError as exc:
        raise CodegenError(f"cannot run the C++ compiler {cxx!r}: {exc} (install g++ or set CXX)") from exc
    return out.stdout.splitlines()[0] if out.stdout else cxx


@functools.lru_cache(maxsize=None)
def cpu_id() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return os.uname().machine
    fields = {}
    for line in text.splitlines():
        if ":" in line:
            k, v = (s.strip() for s in line.split(":", 1))
            if k in ("model name", "flags") and k not in fields:
                fields[k] = v
    return hashlib.sha256(repr(sorted(fields.items())).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Blas:
    """A CBLAS to link: its name (for reports), library folder and `-l` name, header folder."""

    name: str
    lib_dir: Path
    library: str
    include_dir: Path | None = None

    @property
    def flags(self) -> list[str]:
        return ["-DCODESIGN_BLAS=1", f"-L{self.lib_dir}", f"-l{self.library}", f"-Wl,-rpath,{self.lib_dir}"]


BLAS_NAME = "OpenBLAS (scipy-openblas32)"


def blas_enabled() -> bool:
    return os.environ.get("CODESIGN_BLAS", "1").strip().lower() not in ("0", "off", "no", "false", "none")


@functools.lru_cache(maxsize=None)
def _scipy_openblas32() -> Blas | None:
    try:
        import scipy_openblas32 as wheel
    except ImportError:
        return None
    lib_dir = Path(wheel.get_lib_dir())
    library = wheel.get_library()
    if not any(lib_dir.glob(f"lib{library}.*")):
        return None
    return Blas(BLAS_NAME, lib_dir, library, Path(wheel.get_include_dir()))


OPENBLAS_CORETYPE = "OPENBLAS_CORETYPE"
AVX512_FLAGS = frozenset({"avx512f", "avx512bw", "avx512dq", "avx512vl"})
_BLAS_LOCK = threading.Lock()  # os.environ is process-wide: one BLAS load at a time changes it


@functools.lru_cache(maxsize=None)
def openblas_core() -> str | None:
    """The OpenBLAS kernels to ask for on this CPU, or None to leave the choice to OpenBLAS.

    A DYNAMIC_ARCH OpenBLAS (the scipy-openblas32 wheel) picks its kernels from the CPU
    models it knows and falls back to Haswell's (AVX2) on others: on this box's AVX-512 AMD
    EPYC its sgemm then runs at 80-100 GFLOP/s a core instead of 150-170 with its SkylakeX
    (AVX-512) kernels. So where the CPU has AVX-512 F/BW/DQ/VL, ask for SkylakeX, as the
    generated code itself is built with -march=native."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    flags = next((set(line.split(":", 1)[1].split()) for line in text.splitlines() if line.startswith("flags")), set())
    return "SkylakeX" if AVX512_FLAGS <= flags else None


def preload_blas(blas: Blas) -> None:
    """Load `blas` into the process before a generated library that links it, with
    `OPENBLAS_CORETYPE` set to `openblas_core()` for the load only (OpenBLAS reads it once,
    when it is first loaded), unless the user set it or the library is already loaded (by
    scipy, say: then its kernels stay as they are)."""
    files = sorted(blas.lib_dir.glob(f"lib{blas.library}.so*"))
    if not files:
        return
    path = str(files[0])
    try:
        ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_GLOBAL)
        return  # already loaded
    except OSError:
        pass
    core = openblas_core()
    with _BLAS_LOCK:
        if core is None or OPENBLAS_CORETYPE in os.environ:
            ctypes.CDLL(path, mode=os.RTLD_GLOBAL)
            return
        os.environ[OPENBLAS_CORETYPE] = core
        try:
            ctypes.CDLL(path, mode=os.RTLD_GLOBAL)
        finally:
            del os.environ[OPENBLAS_CORETYPE]


def blas_kernels(lib: ctypes.CDLL) -> str | None:
    """The kernels a loaded scipy-openblas32 runs ("SkylakeX", "Haswell"), or None."""
    corename = getattr(lib, "scipy_openblas_get_corename", None)
    if corename is None:
        return None
    corename.restype = ctypes.c_char_p
    return corename().decode()


AVX512_KERNELS = ("SkylakeX", "Cooperlake", "SapphireRapids")
"""OpenBLAS kernel sets (corenames) that use AVX-512."""


def blas_fits_cpu(kernels: str | None) -> bool:
    """Are the loaded BLAS's kernels as wide as this CPU's vectors? Not when OpenBLAS runs
    AVX2 kernels on an AVX-512 CPU (its detection did not know the CPU, or the environment
    says `OPENBLAS_CORETYPE=Haswell`): the hand GEMM, built with -march=native, is faster
    there (benchmarks/results/cpu_conv.json, `gemm_choice`)."""
    return kernels is None or openblas_core() is None or kernels in AVX512_KERNELS


def find_blas() -> Blas | None:
    """The BLAS that fp32 GEMMs go through, or None (hand GEMM): scipy-openblas32 if installed."""
    return _scipy_openblas32() if blas_enabled() else None


def cache_key(ir_text: str, source: str, target: str, blas: Blas | None = None) -> str:
    from codesign import __version__
    cxx = compiler()
    parts = [ir_text, target, compiler_version(cxx), cpu_id(), __version__, " ".join(CXX_FLAGS), source,
             " ".join(blas.flags) if blas else "no-blas"]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Built:
    library: Path
    source: Path
    key: str
    cached: bool  # True when the library came from the cache (no compiler run)
    seconds: float  # compile time (0 on a cache hit)
    blas: Blas | None = None  # the BLAS it links (None: the hand GEMM)


def build(name: str, source: str, ir_text: str, target: str = "host", blas: Blas | None = None,
          *, use_cache: bool = True) -> Built:
    """The shared library for `source`, from the cache (verified) or freshly compiled (linking
    `blas`); `use_cache=False` skips the lookup (the fresh build replaces the entry)."""
    key = cache_key(ir_text, source, target, blas)
    names = (f"{name}.so", f"{name}.cpp")
    directory = cache_dir()
    entry = CACHE.lookup(key, names, directory) if use_cache else None
    if entry is not None:
        return Built(entry.file(names[0]), entry.file(names[1]), key, True, 0.0, blas)
    cxx = compiler()
    start = time.perf_counter()

    def produce(folder: Path) -> None:
        src = folder / names[1]
        src.write_text(source)
        command = [cxx, *CXX_FLAGS, str(src), "-o", str(folder / names[0]), *(blas.flags if blas else [])]
        try:
            proc = subprocess.run(command, capture_output=True, text=True)
        except OSError as exc:
            raise CodegenError(f"cannot run the C++ compiler {cxx!r} on @{name}: {exc}") from exc
        if proc.returncode != 0:
            kept = directory / f"{TMP_PREFIX}failed-{name}.cpp"  # removed after an hour, as temporaries are
            try:
                shutil.copyfile(src, kept)
            except OSError:
                kept = src
            raise CodegenError(f"{cxx} failed on @{name} (source kept as {kept}):\n{proc.stderr[-4000:]}")

    entry = CACHE.build(key, names, produce, replace=not use_cache, directory=directory)
    return Built(entry.file(names[0]), entry.file(names[1]), key, False, time.perf_counter() - start, blas)


def load(path: Path, blas: Blas | None = None) -> ctypes.CDLL:
    """dlopen the library at `path` (OpenMP waiting passively: `openmp.load`; the BLAS it
    links loaded first with this CPU's kernels: `preload_blas`); a file that cannot be
    loaded (or lacks the entry points) is a `CodegenError` naming it."""
    try:
        if blas is not None:
            preload_blas(blas)
        lib = openmp.load(path)
        lib.run.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_void_p)]
        lib.run.restype = ctypes.c_int
        lib.codesign_arena_bytes.restype = ctypes.c_int64
        lib.codesign_gemm.restype = ctypes.c_char_p
    except (OSError, AttributeError) as exc:
        raise CodegenError(f"cannot load the generated library {path}: {exc}") from exc
    return lib
