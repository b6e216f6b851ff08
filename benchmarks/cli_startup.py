"""Wall time of `codesign` commands that need no torch, from process start to exit.

Issue 16: every command imported torch (`codesign --help` 4.1 s, `codesign targets list`
3.3 s on a quiet machine). The package's public names and the command line's sub-commands
now import what they need when they run (`codesign.lazy`, `codesign.cli`); this measures
the console script as a user runs it — a fresh process each time (`subprocess`, stdout to
a pipe), the median of `--runs` runs per command, interleaved so that a burst of load on
the shared machine hits every command alike. For comparison it also times `python -c pass`
(the interpreter's own start) and `codesign opt` on a small IR file, which does import
torch: every op definition carries its torch reference semantics.

Run: .venv/bin/python benchmarks/cli_startup.py [--runs N]
Writes benchmarks/results/cli_startup.json and prints a table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IR = """graph @g(%x: f32[4,8]) -> (f32[4,8]) {
  %y = relu(%x) : f32[4,8]
  return %y
}
"""


def commands(codesign: str, work: Path) -> dict[str, list[str]]:
    """The commands timed, by label; `trace` and `ir` are files in `work`."""
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "codesign --version": [codesign, "--version"],
        "codesign --help": [codesign, "--help"],
        "codesign targets list": [codesign, "targets", "list"],
        "codesign targets show h200": [codesign, "targets", "show", "h200"],
        "codesign targets validate FILE": [codesign, "targets", "validate",
                                           str(ROOT / "codesign/targets/data/h200.yaml")],
        "codesign targets schema": [codesign, "targets", "schema"],
        "codesign experts simulate (200-step trace)": [codesign, "experts", "simulate", "--trace",
                                                       str(work / "trace.jsonl"), "--target", "h100",
                                                       "--expert-bytes", "2GB"],
        "codesign opt FILE.csir --passes canonicalize,dce": [codesign, "opt", str(work / "g.csir"),
                                                            "--passes", "canonicalize,dce"],
        "codesign opt FILE.csir --target sn40l (fuse,tile,map,place)": [
            codesign, "opt", str(work / "g.csir"), "--target", "sn40l", "--passes",
            "canonicalize,dce,fuse,tile,map,place{time_limit=2 deterministic=true}"],
    }


def import_times(work: Path, argv: list[str], top: int = 8) -> dict:
    """`python -X importtime` of `codesign ARGV` once: whether torch was imported, and the
    `top` heaviest imports made directly by the command (cumulative microseconds)."""
    code = f"from codesign.cli import main; main({argv!r})"
    run = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                         cwd=work, check=True)
    rows = []
    for line in run.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|")
        if cumulative.strip().isdigit():
            rows.append((name, int(cumulative)))
    direct = [(name.strip(), us) for name, us in rows if len(name) - len(name.lstrip()) <= 3]  # depth 0-1
    heaviest = sorted(direct, key=lambda r: -r[1])[:top]
    return {"argv": argv, "torch_imported": any(name.strip() == "torch" for name, _ in rows),
            "total_us": sum(us for name, us in rows if len(name) - len(name.lstrip()) == 1),
            "heaviest_us": dict(heaviest)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=11, help="runs per command (median reported)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/cli_startup.json")
    args = parser.parse_args()
    codesign = shutil.which("codesign", path=str(Path(sys.executable).parent)) or shutil.which("codesign")
    if codesign is None:
        sys.exit("the codesign console script is not installed (pip install -e .)")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "g.csir").write_text(IR)
        subprocess.run([codesign, "experts", "generate", "--experts", "16", "--steps", "200", "-o",
                        str(work / "trace.jsonl")], check=True, capture_output=True)
        cmds = commands(codesign, work)
        imports = import_times(work, ["opt", "g.csir", "--passes", "canonicalize,dce"])
        times: dict[str, list[float]] = {label: [] for label in cmds}
        load_start = os.getloadavg()
        for _ in range(args.runs):
            for label, argv in cmds.items():  # interleaved: load bursts hit every command alike
                start = time.perf_counter()
                run = subprocess.run(argv, capture_output=True, cwd=work)
                times[label].append(time.perf_counter() - start)
                if run.returncode != 0:
                    sys.exit(f"{label} failed ({run.returncode}): {run.stderr.decode()[-500:]}")
        load_end = os.getloadavg()
    rows = [{"command": label, "median_s": round(statistics.median(t), 4), "min_s": round(min(t), 4),
             "max_s": round(max(t), 4), "runs": len(t)} for label, t in times.items()]
    import torch  # only for the versions recorded
    data = {
        "benchmark": "cli_startup",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "loadavg_start": [round(x, 2) for x in load_start],
        "loadavg_end": [round(x, 2) for x in load_end],
        "note": "wall time of a fresh process, stdout to a pipe; a shared machine: see the load averages",
        "results": rows,
        "opt_imports": imports,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2) + "\n")
    width = max(len(r["command"]) for r in rows)
    print(f"{'command':<{width}}  median     min     max")
    for r in rows:
        print(f"{r['command']:<{width}}  {r['median_s']:6.3f}  {r['min_s']:6.3f}  {r['max_s']:6.3f}")
    print(f"opt imports torch: {imports['torch_imported']}; top-level imports "
          f"{imports['total_us'] / 1e6:.2f} s: " + ", ".join(f"{n} {us / 1e6:.2f}" for n, us in
                                                           list(imports['heaviest_us'].items())[:5]))
    print(f"load average {load_start[0]:.2f} -> {load_end[0]:.2f}; wrote {args.out}")


if __name__ == "__main__":
    main()
