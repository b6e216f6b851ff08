"""The sweep: every variant of a space, evaluated once, stored as it finishes, returned in order.

`run_sweep` takes the rows it already has from the store, evaluates the missing ones —
here, or on Ray workers (`codesign.explore.ray_runner`) — and returns one row per variant in
the space's order, so the table is the same whichever ran it and however often it was
interrupted. A row is the variant's position and hash, the value of every varied field (SI
units), whether the schema accepts the variant (and why not), and the figures of
`codesign.explore.evaluate`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from codesign.explore.evaluate import Evaluator
from codesign.explore.fields import VariantError
from codesign.explore.space import Space, Variant, target_key
from codesign.explore.store import RowStore
from codesign.targets.schema import Target

__all__ = ["Task", "run_sweep", "tasks_for", "table", "to_csv", "write_outputs", "SweepInterrupted"]


class SweepInterrupted(KeyboardInterrupt):
    """Raised by `stop_after` (tests, a budget): the rows computed so far are stored."""


@dataclass(frozen=True)
class Task:
    """One variant to compute: its key, its column values, and its target (None: invalid)."""

    key: str
    variant: Variant
    target: Target | None
    error: str | None

    def head(self) -> dict[str, Any]:
        return {"variant": self.variant.index, "key": self.key, **self.variant.assignment(),
                "valid": self.target is not None, "error": self.error}


def tasks_for(evaluator: Evaluator, space: Space, variants: Iterable[Variant] | None = None) -> list[Task]:
    """Each variant with its row key (a hash of the evaluator's fingerprint and the variant's
    whole target, or its values when the schema refuses it)."""
    fingerprint = evaluator.fingerprint()
    tasks = []
    for variant in space if variants is None else variants:
        try:
            target, error = variant.target(space.base), None
            what = target_key(target)
        except VariantError as exc:
            target, error = None, str(exc)
            what = json.dumps([target_key(space.base), [[f.canonical, v] for f, v in variant.values]])
        key = hashlib.sha256(f"{fingerprint}:{what}".encode()).hexdigest()[:20]
        tasks.append(Task(key, variant, target, error))
    return tasks


def _progress(total: int, enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    return Progress(TextColumn("sweep"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("{task.fields[what]}"), disable=not enabled, transient=False)


def run_sweep(evaluator: Evaluator, space: Space, *, store: RowStore | None = None, progress: bool = False,
              ray: bool = False, ray_address: str | None = None, workers: int = 2,
              stop_after: int | None = None, variants: Sequence[Variant] | None = None) -> list[dict[str, Any]]:
    """One row per variant (of `variants`, default the whole space), in order; rows already in
    `store` are taken from it, the others computed and stored as they finish. `stop_after`:
    raise `SweepInterrupted` after computing that many (what an interruption leaves behind)."""
    store = store if store is not None else RowStore()
    tasks = tasks_for(evaluator, space, variants)
    missing = [t for t in tasks if t.key not in store]
    done = 0

    with _progress(len(tasks), progress) as bar:
        job = bar.add_task("sweep", total=len(tasks), completed=len(tasks) - len(missing),
                           what=f"{len(tasks) - len(missing)} stored" if len(missing) < len(tasks) else "")

        def finished(task: Task, figures: dict[str, Any] | None) -> None:
            nonlocal done
            store.put(task.key, {**task.head(), **(figures or {})})
            done += 1
            bar.update(job, advance=1, what=f"variant {task.variant.index}")
            if stop_after is not None and done >= stop_after:
                raise SweepInterrupted(f"stopped after {done} variants")

        valid = [t for t in missing if t.target is not None]
        for task in missing:
            if task.target is None:
                finished(task, None)
        if ray and valid:
            from codesign.explore.ray_runner import run_on_ray
            run_on_ray(evaluator, valid, finished, address=ray_address, workers=workers)
        else:
            for task in valid:
                finished(task, evaluator.evaluate(task.target))
    return [store.get(t.key) for t in tasks]  # type: ignore[misc]


def columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Every column, in the order rows first show them (an invalid row has no figures)."""
    out: dict[str, None] = {}
    for row in rows:
        out.update(dict.fromkeys(row))
    return list(out)


def table(rows: Sequence[dict[str, Any]]) -> Any:
    """A pandas DataFrame of the rows when pandas is installed, else the rows (list of dicts)
    with every column present."""
    names = columns(rows)
    full = [{name: row.get(name) for name in names} for row in rows]
    try:
        import pandas
    except ImportError:
        return full
    return pandas.DataFrame(full, columns=names)


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    names = columns(rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in names})
    return buffer.getvalue()


def write_outputs(folder: str | Path, rows: Sequence[dict[str, Any]], meta: dict[str, Any]) -> list[Path]:
    """`sweep.csv` and `sweep.json` (the rows with what produced them) in `folder`."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out / "sweep.csv", out / "sweep.json"
    csv_path.write_text(to_csv(rows))
    json_path.write_text(json.dumps({**meta, "rows": list(rows)}, indent=1, sort_keys=False) + "\n")
    return [csv_path, json_path]

