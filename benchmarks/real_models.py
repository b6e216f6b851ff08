"""Real architectures, compiled and run: every model of the zoo in tests/real_models_harness.py
(transformers, diffusers; torchvision and timm where their builds load with this torch),
built from small configs with random weights, compiled for cpu-host, run through the
generated C++ on fresh random inputs and compared with eager.

Prints one line per model and writes benchmarks/results/real_models.json: per model its
config, status (match / refused with the error / MISMATCH / CRASH / skipped with why), max
relative error vs eager (max |out - eager| / max |eager|, over two fresh inputs) and compile
seconds (capture, passes, C++ generation and build: the first call), plus the machine and
versions.

    .venv/bin/python benchmarks/real_models.py [model ...] [--no-write] [--note TEXT]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("CODESIGN_CACHE_DIR", tempfile.mkdtemp(prefix="codesign-real-models-"))  # builds timed from scratch

import real_models_harness as harness  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
LIBRARIES = ("codesign", "torch", "transformers", "diffusers", "torchvision", "timm")


def version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help=f"models to run (default: all): {', '.join(harness.BY_NAME)}")
    parser.add_argument("--no-write", action="store_true", help="print only; leave the JSON as it is")
    parser.add_argument("--note", default="", help="how this run's libraries were installed, kept in the JSON")
    args = parser.parse_args()
    unknown = [m for m in args.models if m not in harness.BY_NAME]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(harness.BY_NAME)}")
    entries = [harness.BY_NAME[m] for m in args.models] if args.models else list(harness.ZOO)
    load_before = os.getloadavg()
    rows = []
    for entry in entries:
        result = harness.run_model(entry)
        print(result.line(), flush=True)
        rows.append(dataclasses.asdict(result))
    counts = Counter(r["status"] for r in rows)
    print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    if args.no_write or args.models:
        return 0 if not (counts[harness.MISMATCH] or counts[harness.CRASH]) else 1
    out = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "python": sys.version.split()[0],
                    "load_average_before": load_before, "load_average_after": os.getloadavg(),
                    "note": "2 shared cores; compile seconds include other sessions' load"},
        "versions": {name: version(name) for name in LIBRARIES},
        "settings": {"target": "cpu-host", "backend": "cpp", "rtol": harness.RTOL, "seeds": [1, 2],
                     "metric": "max |out - eager| / max |eager| over both seeds", "note": args.note},
        "counts": dict(sorted(counts.items())),
        "models": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "real_models.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")
    return 0 if not (counts[harness.MISMATCH] or counts[harness.CRASH]) else 1


if __name__ == "__main__":
    sys.exit(main())
