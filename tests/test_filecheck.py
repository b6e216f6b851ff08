"""FileCheck tests of the printed IR, as xDSL, MLIR and IREE write them.

Every `tests/filecheck/*.csir` file is a graph plus `// RUN:` lines, each a bash pipeline such
as `codesign opt %s --passes canonicalize | filecheck %s`, and the `// CHECK...` lines that
`filecheck` (the pure-Python clone of LLVM's FileCheck) matches the output against. This module
runs them, one test per file, lit-style:

- `%s` is the file, `%S` its folder, `%t` a scratch path unique to the test, `%%` a `%`;
- a RUN line ending in `\\` continues on the next RUN line;
- `not CMD` succeeds when CMD exits non-zero without a crash (a signal), as lit's `not`;
- pipelines run under `set -o pipefail`, with the venv's bin folder (this interpreter's)
  first on PATH, so `codesign` and `filecheck` are the project's own;
- `// XFAIL: <reason>` marks the file as an expected failure (strict: it must fail; when the
  bug it names is fixed, the test reports XPASS as a failure and the line should go).

Each `codesign opt` is a fresh Python process that imports torch (about 3 s), so keep the
number of RUN lines small; `--print-ir-after-all` shows several stages in one process.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

FILECHECK_DIR = Path(__file__).resolve().parent / "filecheck"
FILES = sorted(FILECHECK_DIR.glob("*.csir"))

_RUN_RE = re.compile(r"^\s*//\s*RUN:(.*)$")
_XFAIL_RE = re.compile(r"^\s*//\s*XFAIL:\s*(.*\S)\s*$")
_SUBST_RE = re.compile(r"%[%sSt]")
_TIMEOUT_S = 180

# lit's `not`: succeed when the command fails, but not when it dies of a signal (rc >= 128)
_PRELUDE = """set -o pipefail
not() { "$@"; local rc=$?; [ "$rc" -ne 0 ] && [ "$rc" -lt 128 ]; }
"""


@dataclass(frozen=True)
class Script:
    path: Path
    runs: tuple[str, ...]
    xfail: str | None


def parse_script(path: Path) -> Script:
    """The RUN pipelines (continuations joined) and the XFAIL reason of a test file."""
    runs: list[str] = []
    pending = ""
    xfail = None
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        m = _XFAIL_RE.match(line)
        if m:
            xfail = m.group(1)
            continue
        m = _RUN_RE.match(line)
        if m is None:
            if pending:
                raise ValueError(f"{path.name}:{lineno}: a RUN line ends in '\\' but no RUN line follows")
            continue
        text = m.group(1).strip()
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        runs.append((pending + text).strip())
        pending = ""
    if pending:
        raise ValueError(f"{path.name}: the last RUN line ends in '\\'")
    return Script(path, tuple(r for r in runs if r), xfail)


def substitute(command: str, path: Path, tmp: Path) -> str:
    table = {"%%": "%", "%s": shlex.quote(str(path)), "%S": shlex.quote(str(path.parent)),
             "%t": shlex.quote(str(tmp))}
    return _SUBST_RE.sub(lambda m: table[m.group()], command)


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("NO_COLOR", "1")
    return env


def _param(path: Path):
    script = parse_script(path)
    marks = [pytest.mark.xfail(reason=script.xfail, strict=True)] if script.xfail else []
    return pytest.param(path, marks=marks, id=path.name)


@pytest.mark.parametrize("path", [_param(p) for p in FILES])
def test_filecheck(path: Path, tmp_path: Path) -> None:
    script = parse_script(path)
    assert script.runs, f"{path.name} has no RUN lines"
    bash = shutil.which("bash")
    assert bash is not None, "the FileCheck tests need bash"
    env = _environment()
    for index, run in enumerate(script.runs, 1):
        command = substitute(run, path, tmp_path / f"t{index}")
        try:
            proc = subprocess.run([bash, "-c", _PRELUDE + command], cwd=path.parent, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  timeout=_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"{path.name}: RUN line {index} timed out after {_TIMEOUT_S} s:\n  {command}\n"
                        f"{exc.output or ''}", pytrace=False)
        if proc.returncode != 0:
            pytest.fail(f"{path.name}: RUN line {index} exited {proc.returncode}:\n  {command}\n"
                        f"--- output ---\n{proc.stdout}", pytrace=False)


# -- the test files themselves ---------------------------------------------------------------
def test_filecheck_files_exist() -> None:
    assert FILES, f"no .csir files in {FILECHECK_DIR}"


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_file_checks_output(path: Path) -> None:
    """A file whose RUN lines never reach `filecheck %s` would pass whatever was printed."""
    runs = parse_script(path).runs
    assert any(re.search(r"\|\s*filecheck\s+%s(\s|$)", run) for run in runs), \
        f"{path.name}: no RUN line pipes into `filecheck %s`"


def test_every_pass_and_pattern_has_a_file() -> None:
    """One file per registered pass (`<pass>*.csir`) and per pattern (`canonicalize-<pattern>*`)."""
    from codesign.passes import PASSES, PATTERNS
    names = [p.stem for p in FILES]
    missing = [f"{n}*.csir" for n in sorted(PASSES) if not any(s.startswith(n) for s in names)]
    missing += [f"canonicalize-{p.name}*.csir" for p in PATTERNS
                if not any(s.startswith(f"canonicalize-{p.name}") for s in names)]
    assert not missing, f"no FileCheck test for: {', '.join(missing)}"
