"""Run a compiled model and time each of its kernels, beside the cost model's view of it.

On CUDA, torch.profiler gives each generated Triton kernel's device time (kernels are named
after their function, so each measured kernel maps to one kernel of the graph that ran);
device kernels launched by externs (cuDNN convolutions, ...) are summed as `other`. The
program's wall time is timed with CUDA events. Each measurement carries the kernel's
`KernelFeatures`, so fitting and prediction need only the measurements, not the model.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch

from codesign.cost.features import KernelFeatures
from codesign.cost.model import CostModel
from codesign.ir.kernels import kernels as graph_kernels
from codesign.ir.plan import chip_rereads


@dataclass(frozen=True)
class KernelTime:
    """One kernel of one measured program: what it does and how long it took."""

    case: str  # the program it belongs to
    kernel: str  # the generated function's name
    key: str  # the graph kernel ("g3", "%name")
    features: KernelFeatures
    seconds: float  # median device time of one launch (of one graph kernel) per call
    implementation: str = "generated"  # or "vendor" (a library kernel)
    launches: int = 1  # graph kernels of these features that ran as this one function (a decoder layer's, per layer)

    @property
    def total_seconds(self) -> float:
        """Device time per call of every graph kernel this measurement stands for."""
        return self.seconds * self.launches

    def as_dict(self) -> dict:
        data = asdict(self)
        data["features"] = self.features.as_dict()
        if self.launches == 1:  # raw files measured before launches were counted read the same
            del data["launches"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "KernelTime":
        return cls(data["case"], data["kernel"], data["key"], KernelFeatures.from_dict(data["features"]),
                   float(data["seconds"]), data.get("implementation", "generated"), int(data.get("launches", 1)))


@dataclass(frozen=True)
class ProgramTime:
    """One measured program: its kernels, the rest of its device time, and its wall time."""

    case: str
    wall_seconds: float  # median time of one call, host included
    kernels: tuple[KernelTime, ...]
    other_device_seconds: float = 0.0  # device kernels no generated kernel accounts for
    launches: int = 0
    extern_features: tuple[KernelFeatures, ...] = ()  # what the externs do, for prediction
    notes: tuple[str, ...] = field(default=())
    graphed: bool = False  # the wall was one CUDA graph replay (the GPU backend's default), not launch by launch

    def as_dict(self) -> dict:
        return {"case": self.case, "wall_seconds": self.wall_seconds, "graphed": self.graphed,
                "other_device_seconds": self.other_device_seconds, "launches": self.launches,
                "kernels": [k.as_dict() for k in self.kernels],
                "extern_features": [f.as_dict() for f in self.extern_features], "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, data: dict) -> "ProgramTime":
        return cls(data["case"], float(data["wall_seconds"]), tuple(KernelTime.from_dict(k) for k in data["kernels"]),
                   float(data.get("other_device_seconds", 0.0)), int(data.get("launches", 0)),
                   tuple(KernelFeatures.from_dict(f) for f in data.get("extern_features", ())),
                   tuple(data.get("notes", ())), bool(data.get("graphed", False)))


def _kernel_map(cm, program) -> tuple[dict[str, tuple[str, KernelFeatures, int]], list[KernelFeatures]]:
    """Profiled function name -> (graph kernel key, features, graph kernels it runs); and the
    features of what runs library code: the externs, and each kernel whose measured choice
    (`triton.choice`, made at its first launch) is its library form — its device time is
    cuBLAS's / cuDNN's, not a kernel of that name, so it is priced as the vendor's, as an
    extern is. Kernels with equal canonical source are one function (`shared_kernels`: a
    decoder layer's kernels are defined once for all layers), so the profiler names all their
    launches after the first; they compute the same function on buffers of the same shapes."""
    library = library_chosen(program)
    units = [(m["name"], tuple(m["nodes"])) for m in program.meta["kernels"]]
    externs = [e["node"] for e in program.meta["externs"]]
    features, extern_features = kernel_features_by_name(cm.target, program.graph,
                                                        [u for u in units if u[0] not in library], externs)
    names: dict[str, tuple[str, KernelFeatures, int]] = {}
    shared = launch_names(program)
    for name, function in shared.items():
        if name in features and function not in names:
            count = sum(1 for n, f in shared.items() if f == function and n not in library)  # every launch of it
            names[function] = (*features[name], count)
    chosen = [u[1][0] for u in units if u[0] in library and u[1]]
    _, library_features = kernel_features_by_name(cm.target, program.graph, [], chosen)
    return names, extern_features + library_features


def launch_names(program) -> dict[str, str]:
    """Each generated kernel's name -> the name its launches carry on the device: the first
    kernel's with the same canonical source (the wrapper binds the others to it)."""
    first: dict[str, str] = {}
    return {m["name"]: first.setdefault(m.get("digest") or m["name"], m["name"]) for m in program.meta["kernels"]}


def library_chosen(program) -> frozenset[str]:
    """Names of the kernels the program runs in their library form (measured choices)."""
    guards = getattr(program, "guards", None) or {}
    return frozenset(name for name, guard in guards.items()
                     if getattr(guard, "choice", None) is not None and guard.choice.implementation == "library")


def kernel_features_by_name(target, graph, units, externs) -> tuple[dict[str, tuple[str, KernelFeatures]],
                                                                    list[KernelFeatures]]:
    """For generated kernels `units` ((function name, node names)) and extern nodes of a graph:
    each kernel's graph key and features, and the externs' features."""
    model = CostModel(target, rereads=chip_rereads(graph))
    types = graph.types()
    by_node = {}
    for kernel in graph_kernels(graph):
        for node in kernel.nodes:
            by_node[node.name] = kernel
    names: dict[str, tuple[str, KernelFeatures]] = {}
    for name, nodes in units:
        kernel = by_node.get(nodes[0]) if nodes else None
        if kernel is not None:
            names[name] = (kernel.key, model.features(kernel, types))
    extern_features = [model.features(by_node[n], types) for n in externs if n in by_node]
    return names, extern_features


def refeature(raw_programs, build, target) -> tuple:
    """The same measurements with features recomputed by this version of the cost model:
    each program is rebuilt on the meta device (`build(case) -> (module, inputs)`), compiled
    for `target` and generated (not run), and its kernels matched by name. Programs whose case
    `build` does not know are kept as they are."""
    import codesign
    from codesign.codegen.triton.wrapper import generate

    out = []
    cache: dict[str, tuple] = {}
    for program in raw_programs:
        case = program.case.removesuffix("_vendor")
        if case not in cache:
            built = build(case)
            if built is None:
                cache[case] = None
            else:
                module, inputs = built
                with torch.no_grad():
                    cm = codesign.compile(module.eval(), inputs, target=target)
                graph = cm.graph_for("triton")
                generated = generate(graph)
                cache[case] = kernel_features_by_name(cm.target, graph, [(k.name, tuple(k.nodes)) for k in generated.kernels],
                                                      [e.node.name for e in generated.externs])
        if cache[case] is None:
            out.append(program)
            continue
        names, externs = cache[case]
        by_shape = {f.gemm: f for _, f in names.values() if f.gemm}
        kernels = []
        for k in program.kernels:
            if k.implementation == "vendor":
                features = by_shape.get(k.features.gemm, k.features)
            else:
                features = names[k.kernel][1] if k.kernel in names else k.features
            kernels.append(KernelTime(k.case, k.kernel, k.key, features, k.seconds, k.implementation, k.launches))
        out.append(ProgramTime(program.case, program.wall_seconds, tuple(kernels), program.other_device_seconds,
                               program.launches, tuple(externs) if not program.case.endswith("_vendor") else (),
                               program.notes, program.graphed))
    return tuple(out)


def _device_events(prof) -> list:
    events = []
    for e in prof.events():
        device_type = getattr(e, "device_type", None)
        if device_type is not None and "CUDA" in str(device_type):
            events.append(e)
    return events


def profile_cuda(case: str, cm, inputs: Sequence[torch.Tensor], repeat: int = 20, warmup: int = 3) -> ProgramTime:
    """Time every generated kernel of `cm` on CUDA inputs (the Triton program)."""
    from torch.profiler import ProfilerActivity, profile

    program = cm.program("triton")
    for _ in range(warmup):  # the first launch makes the measured choices
        cm(*inputs)
    torch.cuda.synchronize()
    names, externs = _kernel_map(cm, program)
    walls = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        cm(*inputs)
        end.record()
        end.synchronize()
        walls.append(start.elapsed_time(end) * 1e-3)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(repeat):
            cm(*inputs)
        torch.cuda.synchronize()
    samples: dict[str, list[float]] = {}
    other = 0.0
    launches = 0
    for e in _device_events(prof):
        seconds = e.time_range.elapsed_us() * 1e-6
        launches += 1
        if e.name in names:
            samples.setdefault(e.name, []).append(seconds)
        else:
            other += seconds
    # per call, a function's launches are its graph kernels' (more where one kernel launches
    # several times); each graph kernel's share is the per-call total over their number
    measured = tuple(KernelTime(case, name, names[name][0], names[name][1],
                                statistics.median(times) * max(1, round(len(times) / repeat)) / names[name][2],
                                launches=names[name][2])
                     for name, times in sorted(samples.items()))
    return ProgramTime(case, statistics.median(walls), measured, other / repeat, launches // repeat,
                       tuple(externs), graphed=replayed_as_graph(program))


def replayed_as_graph(program) -> bool:
    """Whether the Triton program ran its calls as CUDA graph replays (captured, graphs on)."""
    graphs = getattr(program, "graphs", None)
    return bool(graphs is not None and graphs.why_not is None and graphs.captured)


def time_vendor_cuda(fn, repeat: int = 20, warmup: int = 3) -> float:
    """Median device time of all kernels `fn()` launches (a library call), per call."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(repeat):
            fn()
        torch.cuda.synchronize()
    return sum(e.time_range.elapsed_us() * 1e-6 for e in _device_events(prof)) / repeat
