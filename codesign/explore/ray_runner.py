"""Variants in parallel on Ray: a local cluster by default, an existing one by address.

Each worker is an actor holding its own `Evaluator` (the captured graph is put in Ray's
object store once; every actor keeps its own pass-reuse cache), and variants go to
whichever actor is free. Results come back in completion order and are stored at once;
the sweep then returns them in the space's order. Evaluation is deterministic (placement
and expert solves in CP-SAT's deterministic time) and reuse is exact, so the rows are the
serial run's, byte for byte, whichever actor computed which variant.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from codesign.explore.evaluate import Evaluator
from codesign.targets.schema import Target

__all__ = ["run_on_ray", "RayUnavailable"]


class RayUnavailable(RuntimeError):
    """`--ray` without Ray installed."""


class _Worker:
    """One actor: an evaluator over the shared graph (its pass cache lives as long as it does)."""

    def __init__(self, graph: Any, time_limit: float, reuse: bool, options: dict) -> None:
        self.evaluator = Evaluator(graph, time_limit=time_limit, reuse=reuse, options=options)

    def evaluate(self, index: int, target: dict) -> tuple[int, dict]:
        return index, self.evaluator.evaluate(Target.model_validate(target))


def run_on_ray(evaluator: Evaluator, tasks: Sequence[Any], finished: Callable[[Any, dict], None], *,
               address: str | None = None, workers: int = 2) -> None:
    """Evaluate `tasks` (each with a `.target`) on `workers` actors; `finished(task, figures)` per result."""
    try:
        import ray
    except ImportError:
        raise RayUnavailable("--ray needs Ray: pip install 'codesign[sweep]' (or run without --ray)") from None
    started = not ray.is_initialized()
    if started:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:  # a private local cluster of `workers` CPUs, gone when the sweep ends
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
    try:
        graph = ray.put(evaluator.graph)
        actor = ray.remote(num_cpus=1)(_Worker)
        actors = [actor.remote(graph, evaluator.time_limit, evaluator.reuse, dict(evaluator.options))
                  for _ in range(min(workers, len(tasks)))]
        queue = list(enumerate(tasks))
        pending: dict[Any, Any] = {}
        idle = list(actors)

        def submit() -> None:
            while idle and queue:
                index, task = queue.pop(0)
                worker = idle.pop()
                ref = worker.evaluate.remote(index, task.target.model_dump(mode="json"))
                pending[ref] = worker

        submit()
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                idle.append(pending.pop(ref))
                index, figures = ray.get(ref)
                submit()
                finished(tasks[index], figures)
    finally:
        if started:
            ray.shutdown()
