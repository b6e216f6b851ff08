"""`codesign.compile`: capture, run the pass pipeline for a target, and wrap the result.

A `CompiledModule` runs generated code through a backend of the registry
(`codesign.codegen.registry`: the target's `host_backend`, unless the inputs' device or
`backend=` says otherwise; the reference interpreter when a backend cannot compile the
graph), and carries the report, the decision ledger, the plan and the IR before and after
the pipeline.
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from collections import OrderedDict
from typing import Callable, Mapping, Sequence

import torch
from rich.console import Console
from rich.table import Table

from codesign import __version__
from codesign.analysis import GraphStats, graph_stats
from codesign.codegen import CodegenError
from codesign.codegen.registry import FALLBACK, build_program, choose_backend, device_of, get_backend
from codesign.frontend.capture import CapturedModel, capture
from codesign.frontend.signature import Signature
from codesign.frontend.state import LiveState, stamp_of
from codesign.ir.graph import Graph
from codesign.ir.printer import print_graph
from codesign.cost.report import FusionSummary, cost_model_label, kernel_table, roofline_plot, summarize
from codesign.passes.layout import nchw_convs
from codesign.passes.manager import Decision, Instrumentation, PassContext, PassManager
from codesign.progress import Progress
from codesign.targets import Target, load_target
from codesign.targets.units import format_bytes, format_flops, format_time

SAVE_MARKER = ".codesign-output"
COMPILE_PIPELINE = "canonicalize,subpixel-conv,split-group-norm,channels-last,dce,fuse,tile,map,place{time_limit=2 deterministic=true}"
"""What `compile()` runs when no pipeline is given."""


SHAPES = ("recompile", "static")
"""What a call with inputs of other shapes than the example's does (`compile(shapes=...)`)."""


class SaveError(FileExistsError):
    pass


class RecompileWarning(UserWarning):
    """A compiled module met inputs of new shapes and compiles the model again for them."""


@dataclass
class CompiledModule:
    """A model compiled for a target: callable, inspectable, saveable."""

    graph: Graph
    target: Target
    state: Mapping[str, torch.Tensor]
    captured: Graph
    pipeline: str
    capture_method: str = "export"
    ledger: tuple[Decision, ...] = field(default_factory=tuple)
    backend: str = "auto"
    experts: object = None  # the expert-switching Schedule when experts overflow the fast tier
    backend_options: Mapping[str, Mapping[str, object]] = field(default_factory=dict)  # by backend name
    _programs: dict = field(default_factory=dict, repr=False)  # built programs by backend name; None: refused
    _graphs: dict = field(default_factory=dict, repr=False)  # the graph each backend runs (after partition)
    _fusion: FusionSummary | None = field(default=None, repr=False)  # derived once, on demand
    signature: Signature | None = None  # how a call maps onto the graph; None: the graph's own
    _stamp: tuple | None = field(default=None, repr=False)  # the weights' fingerprint the programs hold
    shapes: str = "static"  # inputs of other shapes: "recompile" (needs `recompile`) or "static" (an error)
    max_shapes: int = 8  # compiled variants for other shapes kept (least recently used dropped)
    recompile: Callable[[tuple[torch.Tensor, ...]], "CompiledModule"] | None = field(default=None, repr=False)
    _variants: OrderedDict = field(default_factory=OrderedDict, repr=False)  # input shapes -> CompiledModule
    _warned: bool = field(default=False, repr=False)

    def __repr__(self) -> str:
        """A one-line summary — model, target, backend(s), kernels, inputs — rather than the
        dataclass's field dump, which prints every weight tensor and the whole graph."""
        from codesign.ir.kernels import kernel_key
        inputs = ", ".join(f"{a.name}: {a.type}" for a in self.calling.args)
        if self.backend != "auto":
            backend = self.backend
        else:
            backend = f"auto (host: {self.target.host_backend})"
        built = sorted(name for name, program in self._programs.items() if program is not None)
        refused = sorted(name for name, program in self._programs.items() if program is None)
        extra = "".join([f", built=[{', '.join(built)}]" if built else "",
                         f", refused=[{', '.join(refused)}]" if refused else "",
                         ", meta" if self.is_meta else ""])
        kernel_count = len({kernel_key(n) for n in self.graph.nodes})
        return (f"CompiledModule(@{self.graph.name}, target={self.target.name}, backend={backend}{extra}, "
                f"kernels={kernel_count}, inputs=({inputs}), state={len(self.graph.state_inputs)} tensors)")

    @property
    def calling(self) -> Signature:
        """The calling convention: inputs checked (never cast), buffers the model updates in
        place threaded through the graph, and their new values written back after each call."""
        if self.signature is None:
            self.signature = Signature.plain(self.graph)
        return self.signature

    @property
    def is_meta(self) -> bool:
        return any(t.device.type == "meta" for t in self.state.values())

    def backend_for(self, inputs: Sequence[torch.Tensor]) -> str:
        """Which backend runs these inputs: the pinned `backend`, else the target's
        `host_backend` when it runs on the inputs' device, else that device's default
        (CUDA → triton, CPU → cpp); see `codesign.codegen.registry.choose_backend`."""
        if self.backend != "auto":
            return self.backend
        return choose_backend(self.target.host_backend, device_of(inputs, self.state)).name

    def program(self, backend: str):
        """The program `backend` built for this graph (generated, or loaded from its cache)
        once; raises `CodegenError` when the backend refuses the graph (None afterwards,
        once `__call__` has fallen back)."""
        if backend not in self._programs:
            self._programs[backend] = build_program(backend, self.graph_for(backend), self.state, self.target,
                                                    self.backend_options.get(backend))
        return self._programs[backend]

    def graph_for(self, backend: str) -> Graph:
        """The graph `backend` runs: `graph` after `partition{backend=...}` (the backend's own
        regrouping; its decisions join `ledger`), or `graph` itself when the pipeline already
        ended its grouping with that pass (a plan edited after it runs as written)."""
        if backend not in self._graphs:
            from codesign.passes.registry import parse_pipeline
            ran = {self.target.host_backend if p.backend == "auto" else p.backend
                   for p in parse_pipeline(self.pipeline or "") if p.name == "partition"}
            graph = self.graph if get_backend(backend).nhwc_conv else nchw_convs(self.graph)
            if backend not in ran and get_backend(backend).partition_rules(self.target) is not None:
                ctx = PassContext(target=self.target)
                graph = PassManager(f"partition{{backend={backend}}}").run(graph, ctx)
                self.ledger = tuple(self.ledger) + tuple(ctx.ledger)
            self._graphs[backend] = graph
        return self._graphs[backend]

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if self.is_meta:
            raise RuntimeError(f"{self.graph.name} was captured on the meta device (shapes only): it can be "
                               "planned and reported but not run; build it on cpu/cuda to run it")
        calling = self.calling
        calling.check(inputs, shapes=self.recompile is None or self.shapes == "static")
        if not calling.shapes_match(inputs):
            return self._variant(inputs)(*inputs)
        self._refresh_state()
        runtime = calling.bind(inputs)
        backend = self.backend_for(runtime)
        try:
            program = self.program(backend)
        except CodegenError as exc:
            if self.backend != "auto" or backend == FALLBACK:
                raise
            warnings.warn(f"{backend} backend cannot compile @{self.graph.name} ({exc}); "
                          "running the reference interpreter instead", stacklevel=2)
            self._programs[backend] = None
            program = None
        if program is None:
            program = self.program(FALLBACK)
        with torch.no_grad():
            outs = calling.finish(inputs, _as_list(program(*runtime)))
        return outs[0] if len(outs) == 1 else outs

    @property
    def variants(self) -> tuple[tuple[tuple[int, ...], ...], ...]:
        """The input shapes of the variants compiled for calls with other shapes, oldest use first."""
        return tuple(self._variants)

    def _variant(self, inputs: Sequence[torch.Tensor]) -> "CompiledModule":
        """The model compiled for the shapes of `inputs` (static), from the bounded LRU cache of
        variants or compiled now; the first recompilation warns (`RecompileWarning`)."""
        key = tuple(tuple(x.shape) for x in inputs)
        if key in self._variants:
            self._variants.move_to_end(key)
            return self._variants[key]
        if not self._warned:
            self._warned = True
            compiled = ", ".join(str(list(a.type.shape)) for a in self.calling.args)
            warnings.warn(f"@{self.graph.name} was compiled for input shapes {compiled}; compiling it again for "
                          f"{', '.join(str(list(k)) for k in key)} (up to {self.max_shapes} shapes are kept; "
                          "compile(..., shapes=\"static\") makes another shape an error)", RecompileWarning,
                          stacklevel=3)
        variant = self.recompile(tuple(inputs))
        self._variants[key] = variant
        while len(self._variants) > self.max_shapes:
            self._variants.popitem(last=False)
        return variant

    def _refresh_state(self) -> None:
        """Weights are read live (`state` is a `LiveState`): when their fingerprint changed since
        the programs took them (an update in place, `.data` replaced, a new parameter), check
        them against the graph and hand them to each program again (`bind_state`); a program
        without `bind_state` is rebuilt on its next use. Nothing is copied when nothing changed."""
        stamp = stamp_of(self.state)
        if stamp is not None and stamp == self._stamp:
            return
        if isinstance(self.state, LiveState):
            self.state.check(self.graph)
        for name, program in list(self._programs.items()):
            bind = getattr(program, "bind_state", None)
            if bind is not None:
                bind(self.state)
            elif program is not None:
                del self._programs[name]
        self._stamp = stamp

    def export_cpp(self, directory: str | Path, overwrite: bool = False) -> Path:
        """Standalone C++ sources, weights and a CMakeLists.txt that builds without torch;
        the entry point is `<model>_run` (`codesign.codegen.cpp.module.export_cpp`)."""
        from codesign.codegen.cpp import export_cpp
        return export_cpp(self.graph_for("cpp"), self.state, directory, overwrite=overwrite)

    def stats(self) -> GraphStats:
        return graph_stats(self.graph)

    def fusion(self) -> FusionSummary:
        """Predicted time as eager would launch it (one kernel per op as captured, views
        free) vs as compiled (computed once: report(), summary() and save() all read it)."""
        if self._fusion is None:
            from codesign.ir.plan import chip_rereads
            self._fusion = summarize(self.captured, self.graph, self.target, chip_rereads(self.graph))
        return self._fusion

    def placement(self):
        """The placement plan (tier and offset of every tensor), when `place` ran."""
        from codesign.passes.place import placement_of
        return placement_of(self.ledger)

    def explain(self, as_json: bool = False) -> str:
        """The decision ledger: every candidate the passes weighed, and why."""
        from codesign.explain import render_ledger
        return render_ledger(self.ledger, as_json=as_json)

    def to_mlir(self) -> str:
        from codesign.export import mlir_text
        return mlir_text(nchw_convs(self.graph))  # the export pads a conv input as NCHW

    def summary(self) -> dict:
        """The report as data (also written to plan.json)."""
        s = self.stats()
        plan = self.placement()
        return {
            "codesign_version": __version__,
            "graph": self.graph.name,
            "target": self.target.name,
            "pipeline": self.pipeline,
            "capture": self.capture_method,
            "nodes": len(self.graph.nodes),
            "op_counts": s.op_counts,
            "flops": s.flops,
            "flops_by_kind": s.flops_by_kind,
            "parameters": s.param_count,
            "parameter_bytes": s.param_bytes,
            "buffer_bytes": s.buffer_bytes,
            "input_bytes": s.input_bytes,
            "activation_bytes": s.activation_bytes,
            "peak_activation_bytes": s.peak_activation_bytes,
            "expert_bytes": s.expert_bytes,
            "fusion": self.fusion().as_dict(),
            "pipelines": [{"kernel": k.key, "time_s": k.time, "roofline_time_s": k.roofline_time, "bound": k.bound,
                           "bottleneck": k.pipeline.why(k.problem), "tiles": k.pipeline.tiles,
                           "sections": len(k.pipeline.sections),
                           "stage_times_s": [s.ps / 1e12 for s in k.pipeline.stages]}
                          for k in self.fusion().fused.kernels if k.pipeline is not None],
            "groups": [{"id": g.id, **dict(g.attrs)} for g in self.graph.groups],
            "placement": _without_timing(plan.to_json()) if plan is not None else None,
            "experts": _expert_summary(self.experts) if self.experts is not None else None,
            "weights_fit": {t.name: s.param_bytes + s.buffer_bytes <= self.target.total_capacity(t.name)
                            for t in self.target.memory},
        }

    def report(self, width: int = 100) -> str:
        """Human-readable report: op counts, FLOPs, parameter and activation bytes."""
        s = self.stats()
        buf = io.StringIO()
        console = Console(file=buf, width=width, markup=False, highlight=False, color_system=None,
                          soft_wrap=False)
        console.print(f"codesign report: @{self.graph.name} for target '{self.target.name}' "
                      f"({self.target.kind}, {self.target.sockets} socket{'s' if self.target.sockets > 1 else ''})")
        console.print(f"pipeline: {self.pipeline or '(none)'}   capture: {self.capture_method}   "
                      f"nodes: {len(self.graph.nodes)}")
        totals = Table(title="model", show_header=False)
        totals.add_column("what")
        totals.add_column("value", justify="right")
        totals.add_row("parameters", f"{s.param_count:,} ({_count(s.param_count)})")
        totals.add_row("parameter bytes", format_bytes(s.param_bytes))
        totals.add_row("buffer bytes", format_bytes(s.buffer_bytes))
        if s.expert_bytes:
            totals.add_row("expert weight bytes", format_bytes(s.expert_bytes))
        totals.add_row("input bytes", format_bytes(s.input_bytes))
        totals.add_row("activation bytes (all values)", format_bytes(s.activation_bytes))
        totals.add_row("peak live activations (unfused)", format_bytes(s.peak_activation_bytes))
        totals.add_row("FLOPs", f"{s.flops:,} ({format_flops(s.flops).replace('/s', '')})")
        for kind, flops in s.flops_by_kind.items():
            totals.add_row(f"  {kind}", f"{flops / max(s.flops, 1):.1%}")
        console.print(totals)
        fusion = self.fusion()
        kinds = {f"g{g.id}": str(g.attrs.get("kind", "")) for g in self.graph.groups}
        console.print(kernel_table(fusion.fused, self.target, kinds))
        console.print(f"predicted time: eager-style {format_time(fusion.unfused.time)} "
                      f"({fusion.unfused.launches} kernels) -> compiled {format_time(fusion.fused.time)} "
                      f"({fusion.fused.launches} kernels): {fusion.speedup:.2f}x")
        console.print(f"cost model: {cost_model_label(self.target)}")
        from codesign.cost.report import pipeline_tables
        for table in pipeline_tables(fusion.fused, self.target):
            console.print(table)
        ops = Table(title="ops")
        ops.add_column("op")
        ops.add_column("count", justify="right")
        for op, count in s.op_counts.items():
            ops.add_row(op, str(count))
        console.print(ops)
        plan = self.placement()
        if plan is not None:
            from codesign.placement.report import placement_tables
            for table in placement_tables(plan):
                console.print(table)
        if self.experts is not None:
            from codesign.experts.report import results_table
            results = [r for _, r in self.experts.baselines.values()] + [self.experts.result]
            console.print(results_table(results, title="expert switching (experts exceed the fast tier)"))
        tiers = Table(title=f"memory tiers of {self.target.name}")
        for col in ("tier", "capacity", "bandwidth", "weights fit"):
            tiers.add_column(col, justify="left" if col == "tier" else "right")
        weights = s.param_bytes + s.buffer_bytes
        from codesign.targets.units import format_bandwidth
        for tier in self.target.memory:
            cap = self.target.total_capacity(tier.name)
            tiers.add_row(tier.name, format_bytes(cap), format_bandwidth(self.target.total_bandwidth(tier.name)),
                          "yes" if weights <= cap else f"no ({weights / cap:.1f}x)")
        console.print(tiers)
        return buf.getvalue()

    def save(self, directory: str | Path) -> Path:
        """Write IR dumps, plan.json, the report (report.txt, and report.html: one self-contained
        page with the tables, the ledger and the plots) and the plots; refuses to overwrite a
        user's folder."""
        out = Path(directory)
        if out.exists() and any(out.iterdir()) and not (out / SAVE_MARKER).exists():
            raise SaveError(f"{out} exists and holds files codesign did not write; "
                            f"choose an empty or new folder")
        out.mkdir(parents=True, exist_ok=True)
        (out / SAVE_MARKER).write_text("written by codesign; files here may be replaced by cm.save()\n")
        (out / "captured.csir").write_text(print_graph(self.captured))
        (out / "graph.csir").write_text(print_graph(self.graph))
        (out / "plan.json").write_text(json.dumps(self.summary(), indent=2, sort_keys=True) + "\n")
        (out / "report.txt").write_text(self.report())
        (out / "ledger.json").write_text(self.explain(as_json=True))
        for name, program in sorted(self._programs.items()):
            suffix = get_backend(name).source_suffix
            if program is not None and suffix and isinstance(getattr(program, "source", None), str):
                (out / f"kernels.{suffix}").write_text(program.source)
        plots = {"roofline: predicted FLOP/s of each kernel under the target's roofs":
                 roofline_plot(self.fusion().fused, self.target, out / "roofline.png")}
        from codesign.cost.report import mapped_kernels
        mapped = [(k.key, k.problem, k.pipeline) for k in mapped_kernels(self.fusion().fused)]
        if mapped:
            from codesign.mapping.pictures import floor_plan, trace
            plots["floor plan: the mapped kernels' stages on the chip"] = floor_plan(self.target, mapped,
                                                                                      out / "floorplan.png")
            trace(mapped, out / "pipeline_trace.json")
        plan = self.placement()
        if plan is not None:
            from codesign.placement import memory_plot
            plots["memory: live bytes per tier over the program"] = memory_plot(plan, out / "memory.png")
        from codesign.html_report import render_html
        (out / "report.html").write_text(render_html(self, plots), encoding="utf-8")
        return out


def _as_list(outs) -> list[torch.Tensor]:
    return list(outs) if isinstance(outs, (tuple, list)) else [outs]


def _expert_summary(schedule) -> dict:
    """The expert schedule's figures without solver wall-clock times (plan.json is stable)."""
    data = schedule.summary()
    data["windows"] = [{k: v for k, v in w.items() if k != "seconds"} for w in data["windows"]]
    return data


def _without_timing(plan: dict) -> dict:
    """The plan without its wall-clock solve time, so plan.json is byte-identical per input."""
    return {k: v for k, v in plan.items() if k != "solve_seconds"}


def _count(n: int) -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.2f} {suffix}"
    return str(n)


def compile(model: torch.nn.Module | CapturedModel, example_inputs: Sequence[torch.Tensor] | torch.Tensor = (),
            target: str | Path | Target = "sn40l", *, pipeline: str | None = None,
            instrumentation: Instrumentation | None = None,
            options: Mapping[str, object] | None = None,
            must_fuse: Sequence[str] = (), backend: str = "auto",
            backend_options: Mapping[str, Mapping[str, object]] | None = None,
            train_mode: str = "refuse", check_indices: bool = True, shapes: str = "recompile",
            max_shapes: int = 8, progress: Progress | None = None, reuse: bool = True) -> CompiledModule:
    """Capture `model`, lower it for `target` through `pipeline`, return a `CompiledModule`.

    `must_fuse`: node names that must end in one kernel; compile fails with the decision
    ledger's reasons when they do not. `backend`: "auto" (the target's `host_backend`; the
    inputs' device overrides it: CUDA → triton, CPU → cpp) or any registered backend's name
    (`codesign.codegen.registry.available_backends()`: cpp, interpreter, iree, triton, ...),
    which then runs whatever the device and fails loudly instead of falling back.
    `backend_options`: per backend name, the options its `build` reads (e.g.
    `{"cpp": {"blas": False}}`). Code is generated on the first call.
    `check_indices`: generated code checks gathered indices (embedding, index_select,
    index) and raises `IndexError` as eager does (default); False turns the checks off in
    every backend that has them (the `check_indices` backend option; faster, and an
    out-of-range index is then unchecked). Integer division by zero always raises.
    `train_mode`: "refuse" a model with a module in training mode that computes something
    else in training (BatchNorm, Dropout, ...; call `model.eval()`), or "eval": compile it
    with inference semantics, leaving the model's mode as it is (`capture`).

    The module computes what eager does: weights and buffers are read from the model on each
    call (`LiveState`), buffers the forward updates in place (and inputs) are written back
    after each call, and inputs of another dtype than the example's are refused
    (`InputMismatchError`), never cast. `shapes`: inputs of other shapes than the example's
    are compiled for ("recompile": the model is captured and compiled again for those shapes,
    with a `RecompileWarning` the first time; the last `max_shapes` variants are kept) or
    refused ("static": `InputMismatchError`). A module compiled from a `CapturedModel` has
    no model to capture again: its shapes are static. `progress` (`codesign.progress`) is
    told of each step — capture, every pass, the expert schedule's solve — as it runs
    (`codesign compile` draws them on a terminal); None shows nothing. `reuse`: trace a
    model's repeated layers once and stamp out the rest (`capture(..., reuse=)`: the same
    graph, so the same plan, in a fraction of the time) and fuse a few of them, applying the
    decisions to every copy (`codesign.fusion.repeated`: the same groups and ledger); False
    traces and fuses every layer.
    """
    if shapes not in SHAPES:
        raise ValueError(f"shapes={shapes!r} is not one of {', '.join(SHAPES)}")
    if max_shapes < 1:
        raise ValueError(f"max_shapes={max_shapes} must be at least 1")
    for name in ([backend] if backend != "auto" else []) + list(backend_options or {}):
        get_backend(name)  # an unknown name fails here, with the closest names
    target = target if isinstance(target, Target) else load_target(target)
    progress = progress or (instrumentation.progress if instrumentation else None) or Progress()
    if isinstance(model, CapturedModel):
        captured = model
    else:
        with progress.step(f"capture {type(model).__name__} (torch.export)"):
            captured = capture(model, example_inputs, train_mode=train_mode, reuse=reuse)
    pipeline = COMPILE_PIPELINE if pipeline is None else pipeline
    manager = PassManager(pipeline, replace(instrumentation or Instrumentation(), progress=progress))
    options = dict(options or {})
    if not reuse:
        options.setdefault("reuse", False)  # the passes that reuse a layer's decisions (fuse) decide every layer
    if must_fuse:
        if "fuse" not in [p.name for p in manager.passes]:
            raise ValueError(f"must_fuse needs the fuse pass, which pipeline {manager.pipeline_text!r} lacks")
        options["must_fuse"] = tuple(must_fuse)
    ctx = PassContext(target=target, options=options)
    graph = manager.run(captured.graph, ctx)
    experts = _schedule_experts(graph, target, progress)
    recompile = None
    if shapes == "recompile" and not isinstance(model, CapturedModel):
        def recompile(inputs: tuple[torch.Tensor, ...]) -> CompiledModule:
            return compile(model, inputs, target, pipeline=pipeline, options=options, must_fuse=must_fuse,
                           backend=backend, backend_options=backend_options, train_mode=train_mode,
                           check_indices=check_indices, shapes="static", reuse=reuse)
    return CompiledModule(graph, target, captured.state, captured.graph, manager.pipeline_text,
                          captured.method, tuple(ctx.ledger), backend, experts,
                          _backend_options(backend_options, check_indices),
                          signature=captured.signature, shapes=shapes, max_shapes=max_shapes,
                          recompile=recompile)


def _backend_options(given: Mapping[str, Mapping[str, object]] | None,
                     check_indices: bool) -> dict[str, dict[str, object]]:
    """Per-backend options; `check_indices=False` joins those of every backend with that
    option (a value given per backend wins)."""
    from codesign.codegen.registry import available_backends
    options = {name: dict(opts) for name, opts in (given or {}).items()}
    if not check_indices:
        for name in available_backends():
            if "check_indices" in get_backend(name).options:
                options.setdefault(name, {}).setdefault("check_indices", False)
    return options


def _schedule_experts(graph: Graph, target: Target, progress: Progress):
    """Where MoE experts overflow the tier they run from, schedule their switching (a
    synthetic mid-locality trace stands in until one is recorded: `codesign experts record`).
    Non-expert weights are reserved in that tier first."""
    from codesign.ir.ops import Template, get_op
    if not any(get_op(n.op).template is Template.moe for n in graph.nodes):
        return None
    from codesign.experts import schedule_graph
    from codesign.experts.ilp import IlpOptions
    stats = graph_stats(graph)
    reserve = stats.param_bytes + stats.buffer_bytes - stats.expert_bytes
    with progress.step("expert schedule (CP-SAT)"):
        return schedule_graph(graph, target, reserve=reserve, steps=64,
                              options=IlpOptions(time_limit=2.0, deterministic=True))
