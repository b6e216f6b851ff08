"""Co-design exploration: which chip should this model get? (issue 15; docs/architecture.md)

Sweep or search target fields (`memory.sram.capacity`, `hbm.bandwidth`, `compute.peak.bf16`,
any field of the schema by its path) and read, per variant, what `compile()`'s analytic
pipeline predicts: time, tokens/s, traffic per tier, energy, area, cost, placement, layer
streaming and expert switching. The model is captured once; pass results are reused across
variants that agree on every field the pass read (`reuse`); rows are stored as they finish
(`store`), so a sweep resumes; Ray runs variants in parallel with the serial run's rows.

    codesign.sweep(model, inputs, "sn40l", ["sram.capacity=64MiB..1GiB:x2", "hbm.bandwidth=1TB/s,2TB/s"])

Modules: `fields` (paths into the schema, units), `space` (--vary specs, variants),
`reads` (the access-recording target view), `reuse` (pass results keyed by what each pass
read), `evaluate` (one variant's figures), `store` (resumable rows), `runner` (the driver,
tables), `ray_runner`, `pareto` (objectives, constraints, fronts), `search` (Optuna),
`summary` (sensitivity, where returns stop, thresholds), `plots`, `cli`.
This package imports neither torch nor the solvers until a sweep runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["sweep"]


def sweep(model: Any, inputs: Sequence[Any] | Any, base_target: Any, space: Sequence[str] | Mapping[str, Any] | Any,
          *, out: str | Path | None = None, ray: bool = False, ray_address: str | None = None, workers: int = 2,
          time_limit: float | None = None, reuse: bool = True, progress: bool = False) -> Any:
    """Evaluate every variant of `space` over `base_target` for `model` (captured once).

    `space`: a `Space`, `["PATH=SPEC", ...]` or `{PATH: SPEC or [values]}` (specs as for
    `codesign sweep --vary`). `out`: a folder whose `rows.jsonl` makes the sweep resumable
    (and where `sweep.csv` / `sweep.json` are written). Returns a pandas DataFrame when
    pandas is installed, else a list of dict rows, one per variant, in the space's order.
    """
    from codesign.explore.evaluate import DEFAULT_TIME_LIMIT, Evaluator
    from codesign.explore.space import Space
    from codesign.explore.store import RowStore
    from codesign.explore.runner import run_sweep, table, write_outputs
    from codesign.targets import Target, load_target

    base = base_target if isinstance(base_target, Target) else load_target(base_target)
    space = space if isinstance(space, Space) else Space.parse(base, space)
    evaluator = Evaluator.from_model(model, inputs, time_limit=time_limit or DEFAULT_TIME_LIMIT, reuse=reuse)
    rows = run_sweep(evaluator, space, store=RowStore(out), progress=progress, ray=ray, ray_address=ray_address,
                     workers=workers)
    if out is not None:
        write_outputs(out, rows, {"target": base.name, "pipeline": evaluator.pipeline, "space": space.describe()})
    return table(rows)
