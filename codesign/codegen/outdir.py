"""Writing a directory of generated files safely: `staged_directory`.

An export (`export_cpp`) writes a folder the user names. It must not overwrite the user's
own files (their `main.cpp`, their `CMakeLists.txt`), must not write through a symbolic
link planted in it, and must not leave half an export behind when it fails. So:

- the folder must be new, empty, or a previous export of the same kind — one holding the
  marker file (`MARKER`, which lists the files that export wrote) and nothing else but
  those files and the derived folders in `keep` (`build/`, where CMake builds);
- files are written into a fresh staging folder beside it (`tempfile.mkdtemp`: private,
  ours), each created with `O_CREAT | O_EXCL | O_NOFOLLOW`, so that no symbolic link is
  ever followed; the folder itself may not be a symbolic link;
- only when every file is written does the staging folder take the folder's place (a
  rename; a previous export is moved aside first, its `keep` folders carried over, then
  removed). On any error the staging folder is removed and the folder is as it was.

`overwrite=True` (the command line's `--overwrite`) is the user saying that the folder's
other files may stay and its files of the same names may go: the staged files are then
renamed one by one into the existing folder, over any file of the same name (never over a
folder, never through a link: a rename replaces the link itself), and nothing else in it
is touched.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

MARKER = ".codesign-export"
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


class ExportError(FileExistsError):
    """The output folder cannot be written safely; the message says why and what to do."""


class Stage:
    """The staging folder of one export: `write_text`, `write_bytes`, `open` (binary)."""

    def __init__(self, root: Path):
        self.root = root
        self.files: list[str] = []

    def _path(self, name: str) -> Path:
        if not name or "/" in name or os.sep in name or name in (".", "..", MARKER):
            raise ValueError(f"not a plain file name for an export: {name!r}")
        if name in self.files:
            raise ValueError(f"{name} written twice")
        self.files.append(name)
        return self.root / name

    def open(self, name: str) -> BinaryIO:
        return os.fdopen(os.open(self._path(name), _FLAGS, 0o666), "wb")

    def write_bytes(self, name: str, data: bytes) -> None:
        with self.open(name) as f:
            f.write(data)

    def write_text(self, name: str, text: str) -> None:
        self.write_bytes(name, text.encode("utf-8"))


def check_directory(out: Path, kind: str, keep: tuple[str, ...] = (), overwrite: bool = False) -> bool:
    """Whether `out` exists (as an empty folder or a previous `kind` export); raises
    `ExportError` when writing there would touch anything else (unless `overwrite`)."""
    if out.is_symlink():
        raise ExportError(f"{out} is a symbolic link; {kind} writes only into a real folder: give the "
                          "folder it points to, or a new path")
    if not out.exists():
        return False
    if not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder; give a new or empty folder for {kind}")
    entries = sorted(os.listdir(out))
    if not entries or overwrite:
        return True
    marker = out / MARKER
    if MARKER not in entries or marker.is_symlink() or not marker.is_file():
        raise ExportError(f"{out} is not empty and holds no previous {kind} (no {MARKER} file): writing "
                          "there would replace files codesign did not write; choose an empty or new folder "
                          "(or pass --overwrite / overwrite=True to write over files of the same names)")
    try:
        record = json.loads(marker.read_text(encoding="utf-8"))
        written = set(record["files"]) if record.get("kind") == kind else None
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        written = None
    if written is None:
        raise ExportError(f"{out}/{MARKER} is not the marker of a {kind}; choose an empty or new folder")
    foreign = [e for e in entries if e != MARKER and e not in written
               and not (e in keep and (out / e).is_dir() and not (out / e).is_symlink())]
    links = [e for e in entries if e not in foreign and (out / e).is_symlink()]
    if foreign or links:
        what = ", ".join(foreign + links)
        raise ExportError(f"{out} holds a previous {kind} but also files it did not write ({what}); move them "
                          "away or choose an empty or new folder")
    return True


@contextmanager
def staged_directory(directory: str | Path, kind: str, keep: tuple[str, ...] = (),
                     overwrite: bool = False) -> Iterator[Stage]:
    """Write files into a `Stage`; on success they replace `directory` as a whole (see the
    module docstring), or with `overwrite` join it file by file; on an exception nothing in
    `directory` changes."""
    out = Path(directory)
    existed = check_directory(out, kind, keep, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        stage = Stage(staging)
        yield stage
        with os.fdopen(os.open(staging / MARKER, _FLAGS, 0o666), "w", encoding="utf-8") as f:
            json.dump({"kind": kind, "written_by": "codesign", "files": sorted(stage.files)}, f, indent=1)
            f.write("\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp's 0700, as a folder the user made would be
        if overwrite and existed:
            _merge(staging, out, stage.files + [MARKER])
            return
        check_directory(out, kind, keep)  # again: nothing appeared there while we wrote
        if not existed or not any(os.scandir(out)):
            os.replace(staging, out)  # onto nothing, or onto an empty folder: one rename
            return
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, old)  # a folder onto an empty folder
        os.replace(staging, out)
        for name in keep:
            if (old / name).is_dir() and not (old / name).is_symlink():
                os.replace(old / name, out / name)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _merge(staging: Path, out: Path, names: list[str]) -> None:
    """Rename each staged file into `out`, over a file (or link) of the same name; refuses,
    before moving any, when one of those names is a folder there."""
    folders = [n for n in names if (out / n).is_dir() and not (out / n).is_symlink()]
    if folders:
        raise ExportError(f"{out} holds folders named as files the export writes ({', '.join(folders)}); "
                          "move them away or choose an empty or new folder")
    for name in names:
        os.replace(staging / name, out / name)
