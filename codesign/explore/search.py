"""Multi-objective search (Optuna) for spaces too big to enumerate.

Each trial picks one value per axis — an ordered axis (a range) by its position, so the
sampler sees that 256 MiB lies between 128 and 512, a list as a category — evaluates the
variant exactly as a sweep does (same rows, same store, so a search resumes and shares
rows with sweeps of the same model), and reports the objectives and constraint excesses
to Optuna's NSGA-II sampler (seeded: the same trials on every run). The Pareto front is
computed from the rows themselves (`codesign.explore.pareto`), so each of its points is a
stored row that re-evaluates to the same figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from codesign.explore.evaluate import Evaluator
from codesign.explore.pareto import Constraint, Objective, pareto_front
from codesign.explore.space import Space, Variant
from codesign.explore.store import RowStore
from codesign.explore.runner import run_sweep

__all__ = ["SearchResult", "run_search", "OptunaUnavailable"]


class OptunaUnavailable(RuntimeError):
    """`codesign search` without Optuna installed."""


@dataclass(frozen=True)
class SearchResult:
    rows: list[dict[str, Any]]  # one per distinct variant tried, in trial order
    front: list[dict[str, Any]]  # the Pareto-optimal feasible rows
    trials: int


def _with_fields(row: dict[str, Any], variant: Variant, space: Space, named: Sequence[Objective | Constraint]) -> dict:
    """The row with the value of every target field an objective or constraint names (a field
    that is not varied keeps the base target's value)."""
    out = dict(row)
    for item in named:
        if item.field is not None and item.column not in out:
            out[item.column] = item.field.get(space.base)
    return out


def run_search(evaluator: Evaluator, space: Space, objectives: Sequence[Objective],
               constraints: Sequence[Constraint] = (), *, trials: int = 50, seed: int = 0,
               store: RowStore | None = None, progress: bool = False) -> SearchResult:
    """`trials` Optuna trials over `space`, minimising/maximising `objectives` under `constraints`."""
    try:
        import optuna
    except ImportError:
        raise OptunaUnavailable("codesign search needs Optuna: pip install 'codesign[sweep]'") from None
    if trials < 1:
        raise ValueError(f"trials must be at least 1, got {trials}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = store if store is not None else RowStore()
    named = list(objectives) + list(constraints)
    rows: dict[int, dict[str, Any]] = {}

    def objective(trial: Any) -> tuple[float, ...]:
        chosen = {}
        for axis in space.axes:
            n = len(axis.values)
            if axis.scale == "list":
                i = trial.suggest_categorical(axis.name, list(range(n)))
            else:
                i = trial.suggest_int(axis.name, 0, n - 1)
            chosen[axis.name] = axis.values[i]
        variant = space.variant(chosen)
        row = _with_fields(run_sweep(evaluator, space, store=store, variants=[variant])[0], variant, space, named)
        rows.setdefault(hash(row["key"]), row)
        excess = [c.excess(row) for c in constraints] + [0.0 if row.get("valid") else 1.0]
        excess = [e if e != float("inf") else 1e300 for e in excess]
        if modern:
            for i, e in enumerate(excess):
                trial.set_constraint(f"c{i}", e)
        else:
            trial.set_user_attr("constraints", excess)
        values = [o.value(row) for o in objectives]  # a missing figure is as bad as it gets
        return tuple((1e300 if o.sense == "min" else -1e300) if v is None else v for o, v in zip(objectives, values))

    modern = hasattr(optuna.trial.Trial, "set_constraint")  # Optuna 5; constraints_func before
    sampler = optuna.samplers.NSGAIISampler(seed=seed, **({} if modern else {
        "constraints_func": lambda t: t.user_attrs["constraints"]}))
    study = optuna.create_study(directions=["minimize" if o.sense == "min" else "maximize" for o in objectives],
                                sampler=sampler)
    from rich.progress import Progress
    with Progress(disable=not progress) as bar:
        job = bar.add_task("search", total=trials)
        study.optimize(objective, n_trials=trials, callbacks=[lambda s, t: bar.update(job, advance=1)])
    ordered = list(rows.values())
    return SearchResult(ordered, pareto_front(ordered, objectives, constraints), trials)
