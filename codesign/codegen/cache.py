"""The on-disk cache of generated code, one implementation for every backend (C++, Triton).

Layout: `<root>/<kind>/<key>/` holds one entry — the artefacts (`model.so` and its
`model.cpp`; a Triton wrapper `.py` and its `.json` report) and `manifest.json`, which
records each artefact's sha256 and size and is written *after* them. The root is
`$CODESIGN_CACHE_DIR` or `~/.cache/codesign`; `kind` is the backend (`cpp`, `triton`).

Trust. What is loaded from the cache runs as the compiling user (a `.so` is dlopen'ed, a
`.py` imported), so nothing is loaded unchecked:

- the root and the kind folder must be owned by the current user and not writable by
  group or others; otherwise the cache is refused with a `CacheWarning` naming the folder
  and the fix (`chmod 700 <path>`, or a private `CODESIGN_CACHE_DIR`), and this process
  builds in a private temporary folder instead (never reading the refused one);
- an entry is loaded only when its folder, manifest and files are regular, owned by the
  user, not group/other-writable, and every file's sha256 matches the manifest. Anything
  else — a planted file without a manifest, a wrong hash, a truncated library, a corrupt
  manifest — is discarded and rebuilt with a `CacheWarning` naming the entry; it is never
  loaded and never fatal.

Writes are atomic: an entry is built in a temporary folder beside its final place
(`.tmp-*`), every file fsync'ed, the manifest written through a temporary file, fsync and
`os.replace`, and the folder published with one rename, so a reader sees a whole entry or
none. Temporaries left by killed builds (older than `TMP_MAX_AGE`, an hour) are removed on
the next build. The cache is bounded: after each build, least recently used entries (a hit
touches its manifest) are evicted until the whole root fits `$CODESIGN_CACHE_MAX_BYTES`
(default 2 GiB; `K`/`M`/`G` suffixes allowed).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import stat
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

FORMAT = "codesign-cache/1"
MANIFEST = "manifest.json"
TMP_PREFIX = ".tmp-"
TMP_MAX_AGE = 3600.0
"""Seconds after which a temporary left in the cache (a killed build's) is removed."""
DEFAULT_MAX_BYTES = 2 << 30
KINDS = ("cpp", "triton")
"""The kind folders a root holds; eviction counts (and evicts from) all of them."""

_HEX = frozenset("0123456789abcdef")


class CacheWarning(UserWarning):
    """The cache was refused, or an entry in it was discarded (and rebuilt)."""


def cache_root() -> Path:
    """`$CODESIGN_CACHE_DIR`, else `~/.cache/codesign` (the folder holding every kind)."""
    root = os.environ.get("CODESIGN_CACHE_DIR")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "codesign"


def max_bytes() -> int:
    """The size bound of the whole cache root: `$CODESIGN_CACHE_MAX_BYTES` (bytes, or with a
    K/M/G/T suffix, powers of 1024), default 2 GiB; an unreadable value warns and uses the default."""
    text = os.environ.get("CODESIGN_CACHE_MAX_BYTES", "").strip()
    if not text:
        return DEFAULT_MAX_BYTES
    scale = 1
    unit = text[-1].upper()
    if unit == "B":
        text, unit = text[:-1], text[-2:-1].upper()
    if unit and unit in "KMGT":
        scale = 1024 ** ("KMGT".index(unit) + 1)
        text = text[:-1]
    try:
        value = int(float(text) * scale)
    except ValueError:
        value = -1
    if value < 0:
        warnings.warn(f"CODESIGN_CACHE_MAX_BYTES={os.environ['CODESIGN_CACHE_MAX_BYTES']!r} is not a size; "
                      f"using {DEFAULT_MAX_BYTES} bytes", CacheWarning, stacklevel=2)
        return DEFAULT_MAX_BYTES
    return value


def unsafe_reason(st: os.stat_result) -> str | None:
    """Why a file or folder with this stat may hold code someone else planted, or None."""
    getuid = getattr(os, "getuid", None)
    if getuid is not None and st.st_uid != getuid():
        return f"owned by uid {st.st_uid}, not by you (uid {getuid()})"
    writable = [who for who, bit in (("group", stat.S_IWGRP), ("others", stat.S_IWOTH)) if st.st_mode & bit]
    if writable:
        return f"writable by {' and '.join(writable)} (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync(path: Path, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write `data` to `path` through a temporary file in the same folder: fsync, os.replace."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync(path.parent, directory=True)


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


def _tree_bytes(path: Path) -> int:
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


_private_root: Path | None = None


def _private() -> Path:
    """A folder only this process uses (mode 0700), removed at exit: where builds go when
    the configured cache is refused."""
    global _private_root
    if _private_root is None:
        _private_root = Path(tempfile.mkdtemp(prefix="codesign-cache-"))
        atexit.register(shutil.rmtree, _private_root, True)
    return _private_root


@dataclass(frozen=True)
class Entry:
    """One verified cache entry: its folder, key, and whether it was found (not built)."""

    path: Path
    key: str
    cached: bool

    def file(self, name: str) -> Path:
        return self.path / name


class Cache:
    """The cache of one backend (`kind`: its folder under the root)."""

    def __init__(self, kind: str):
        self.kind = kind

    # -- where -----------------------------------------------------------------------------------
    def directory(self) -> Path:
        """`<root>/<kind>`, created (mode 0700) when missing and checked: a folder not owned by
        the user, or writable by group/others, is refused (a `CacheWarning` naming it and the
        fix) and a private temporary folder is used instead."""
        root = cache_root()
        folder = root / self.kind
        for path in (root, folder):
            try:
                path.mkdir(mode=0o700, parents=True, exist_ok=True)
                st = os.stat(path)
            except OSError as exc:
                return self._refuse(path, f"not usable ({exc.strerror or exc})", "set CODESIGN_CACHE_DIR "
                                    "to a folder you own")
            if not stat.S_ISDIR(st.st_mode):
                return self._refuse(path, "not a folder", "set CODESIGN_CACHE_DIR to a folder you own")
            reason = unsafe_reason(st)
            if reason:
                return self._refuse(path, reason, f"`chmod 700 {path}` (and own it), or set CODESIGN_CACHE_DIR "
                                    "to a private folder")
        return folder

    def _refuse(self, path: Path, reason: str, fix: str) -> Path:
        private = _private() / self.kind
        private.mkdir(mode=0o700, exist_ok=True)
        warnings.warn(f"codesign cache folder {path} is {reason}: refusing to use it (code loaded from a cache "
                      f"runs as you, and others could plant it there); fix: {fix}. Building in the private "
                      f"temporary folder {private} for this process instead", CacheWarning, stacklevel=4)
        return private

    # -- reading ---------------------------------------------------------------------------------
    def lookup(self, key: str, names: Sequence[str], directory: Path | None = None) -> Entry | None:
        """The verified entry `key` holding `names`, touched (its last use is now), or None:
        absent, or invalid — then it is discarded with a `CacheWarning` naming it."""
        folder = (directory or self.directory()) / key
        try:
            os.lstat(folder)
        except FileNotFoundError:
            return None
        except OSError as exc:
            problem = f"cannot be read ({exc})"
        else:
            problem = self.verify(folder, key, names)
        if problem:
            warnings.warn(f"codesign cache entry {folder} {problem}; not loading it, rebuilding it",
                          CacheWarning, stacklevel=3)
            _remove(folder)
            return None
        try:
            os.utime(folder / MANIFEST)
        except OSError:
            pass
        return Entry(folder, key, True)

    @staticmethod
    def verify(folder: Path, key: str, names: Sequence[str]) -> str | None:
        """Why the entry folder cannot be trusted (a phrase), or None when it can."""
        try:
            st = os.lstat(folder)
        except OSError as exc:
            return f"cannot be read ({exc})"
        if not stat.S_ISDIR(st.st_mode):
            return "is not a folder"
        if reason := unsafe_reason(st):
            return f"is {reason}"
        manifest_path = folder / MANIFEST
        try:
            st = os.lstat(manifest_path)
        except FileNotFoundError:
            return f"has no {MANIFEST}"
        except OSError as exc:
            return f"has an unreadable {MANIFEST} ({exc})"
        if not stat.S_ISREG(st.st_mode):
            return f"has a {MANIFEST} that is not a regular file"
        if reason := unsafe_reason(st):
            return f"has a {MANIFEST} {reason}"
        try:
            manifest = json.loads(manifest_path.read_text())
            files = manifest["files"]
            ok = manifest.get("format") == FORMAT and manifest.get("key") == key and isinstance(files, dict)
        except (OSError, ValueError, KeyError, TypeError):
            return f"has a corrupt {MANIFEST}"
        if not ok:
            return f"has a {MANIFEST} of another format or key"
        missing = [n for n in names if n not in files]
        if missing:
            return f"lists no {', '.join(missing)} in its {MANIFEST}"
        for name, want in files.items():
            path = folder / name
            if Path(name).name != name or name in (".", ".."):
                return f"lists a file outside it ({name!r})"
            try:
                st = os.lstat(path)
            except OSError:
                return f"lacks {name}"
            if not stat.S_ISREG(st.st_mode):
                return f"has a {name} that is not a regular file"
            if reason := unsafe_reason(st):
                return f"has a {name} {reason}"
            try:
                if st.st_size != want["size"]:
                    return f"has a {name} of {st.st_size} bytes, {want['size']} recorded (truncated or replaced)"
                if sha256_file(path) != want["sha256"]:
                    return f"has a {name} whose sha256 differs from the one recorded (modified or planted)"
            except (OSError, KeyError, TypeError):
                return f"has a corrupt {MANIFEST} entry for {name}"
        return None

    # -- writing ---------------------------------------------------------------------------------
    def build(self, key: str, names: Sequence[str], produce: Callable[[Path], None], *,
              replace: bool = False, directory: Path | None = None) -> Entry:
        """A fresh entry `key`: `produce(folder)` writes `names` into a temporary folder, which
        is then hashed, manifested and published by one rename (`replace`: over an existing
        entry; otherwise an entry a concurrent build published first is kept). Cleans old
        temporaries first and evicts least recently used entries after. `directory`: the kind
        folder `directory()` returned (asked again when None)."""
        directory = directory or self.directory()
        self.clean_temporaries(directory)
        staging = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{key[:16]}-", dir=directory))
        try:
            produce(staging)
            files = {}
            for name in names:
                path = staging / name
                mode = stat.S_IMODE(os.stat(path).st_mode)
                if mode & 0o022:  # a umask of 002 would leave it group-writable: never trusted later
                    os.chmod(path, mode & ~0o022)
                _fsync(path)
                files[name] = {"sha256": sha256_file(path), "size": path.stat().st_size}
            from codesign import __version__
            atomic_write(staging / MANIFEST, json.dumps({"format": FORMAT, "key": key, "kind": self.kind,
                                                         "codesign": __version__, "created": time.time(),
                                                         "files": files}, indent=1))
            _fsync(staging, directory=True)
        except BaseException:
            _remove(staging)
            raise
        if replace:
            _remove(directory / key)
        final = self._publish(staging, directory / key, key, names)
        self.evict(directory.parent, keep=final)
        return Entry(final, key, False)

    def _publish(self, staging: Path, final: Path, key: str, names: Sequence[str]) -> Path:
        for attempt in range(2):
            try:
                os.rename(staging, final)
                _fsync(final.parent, directory=True)
                return final
            except OSError:
                pass
            if self.verify(final, key, names) is None:  # a concurrent build published it first
                _remove(staging)
                return final
            _remove(final)  # an invalid entry (a failed lookup may not have removed it)
        return staging  # could not publish: use this build as it is (removed as a temporary later)

    def discard(self, key: str) -> None:
        """Remove entry `key` (it failed to load)."""
        _remove(self.directory() / key)

    # -- housekeeping ----------------------------------------------------------------------------
    @staticmethod
    def clean_temporaries(directory: Path, max_age: float = TMP_MAX_AGE) -> list[Path]:
        """Remove temporaries (`.tmp-*`, `*.tmp`) older than `max_age` seconds from `directory`
        and its entries: what killed builds left. Returns what was removed."""
        now = time.time()
        removed = []
        try:
            children = list(directory.iterdir())
        except OSError:
            return removed
        candidates = []
        for child in children:
            candidates.append(child)
            if child.is_dir() and not child.is_symlink() and not child.name.startswith(TMP_PREFIX):
                try:
                    candidates += [c for c in child.iterdir() if c.name.startswith(TMP_PREFIX)]
                except OSError:
                    pass
        for path in candidates:
            if not (path.name.startswith(TMP_PREFIX) or path.name.endswith(".tmp")):
                continue
            try:
                age = now - os.lstat(path).st_mtime
            except OSError:
                continue
            if age > max_age:
                _remove(path)
                removed.append(path)
        return removed

    @staticmethod
    def entries(root: Path) -> list[tuple[float, int, Path]]:
        """(last use, bytes, folder) of every entry under `root`'s kind folders."""
        found = []
        for kind in KINDS:
            try:
                children = list((root / kind).iterdir())
            except OSError:
                continue
            for child in children:
                if child.is_symlink() or not child.is_dir() or not set(child.name) <= _HEX:
                    continue
                try:
                    used = os.lstat(child / MANIFEST).st_mtime
                except OSError:
                    try:
                        used = os.lstat(child).st_mtime
                    except OSError:
                        continue
                found.append((used, _tree_bytes(child), child))
        return found

    @classmethod
    def evict(cls, root: Path, keep: Path | None = None, limit: int | None = None) -> list[Path]:
        """Remove least recently used entries until those under `root` fit `limit` bytes
        (`max_bytes()`); `keep` (the entry just built) stays. Returns what was removed."""
        limit = max_bytes() if limit is None else limit
        found = sorted(cls.entries(root))
        total = sum(size for _, size, _ in found)
        removed = []
        for _used, size, path in found:
            if total <= limit:
                break
            if keep is not None and path == keep:
                continue
            _remove(path)
            removed.append(path)
            total -= size
        return removed


__all__ = ["Cache", "CacheWarning", "DEFAULT_MAX_BYTES", "Entry", "FORMAT", "KINDS", "MANIFEST", "TMP_MAX_AGE",
           "atomic_write", "cache_root", "max_bytes", "sha256_file", "unsafe_reason"]
