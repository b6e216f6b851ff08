"""The fusion pass: group ops into kernels, and say why for every pair it considered.

Three gates, in Inductor's order, each kept apart: legality (`fusion.legality`: may these
run as one kernel?), capacity (`fusion.capacity`: do the group's tiles fit the fast tier?),
profitability (`fusion.policy`, asking the cost model: is the fused kernel faster than the
two?). Candidates are producer→consumer edges, merged greedily best-score first and
re-scored lazily as groups grow. On targets that stream layers (`Target.streams_layers`:
dataflow chips) a second step streams each repeated block (a decoder layer) as one kernel
when its stage buffers fit the SRAM, as the SN40L does. Every evaluation lands in the decision ledger with its rule, score parts and
what-if times; `must_fuse` fails with those reasons when named nodes end apart.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field, replace
from typing import ClassVar, Iterable, Sequence

from codesign.cost.model import CostModel
from codesign.cost.traffic import TiledReread
from codesign.fusion.capacity import WorkingSet, chip_capacity, fast_capacity, working_set
from codesign.fusion.legality import Verdict, check_layer, check_merge, cycle_verdict
from codesign.fusion.partition import Partition
from codesign.fusion.pointwise import Figures, PointwiseCosts, Sums
from codesign.fusion.policy import FusionPolicy, Score
from codesign.fusion.repeated import Decisions, Record, shorten
from codesign.ir.graph import Graph, Group
from codesign.ir.kernels import Kernel, group_kind, kernels
from codesign.ir.plan import GroupPlan
from codesign.ir.repeats import kernel_signature
from codesign.passes.manager import Ledger, PassContext
from codesign.passes.registry import Pass, PipelineError, register_pass


class FusionError(ValueError):
    """A `must_fuse` request the fusion rules refused; the message quotes the ledger."""


@dataclass(frozen=True)
class Evaluation:
    subject: str
    producer: str
    consumer: str
    verdict: Verdict
    capacity_bytes: int | None
    capacity_limit: int
    separate_time: float | None
    fused_time: float | None
    score: dict | None
    decision: str  # fuse (queued) | fused | already-fused | refused | over-capacity | unprofitable

    def reason(self) -> str:
        if self.decision == "refused":
            return f"rule '{self.verdict.rule}': {self.verdict.detail}"
        if self.decision == "over-capacity":
            return (f"rule 'capacity': working set {self.capacity_bytes} B exceeds the fast tier's "
                    f"{self.capacity_limit} B")
        if self.decision == "unprofitable":
            return (f"rule 'slowdown': fused {self.fused_time * 1e6:.3f} us vs separate "
                    f"{self.separate_time * 1e6:.3f} us")
        if self.decision == "already-fused":
            return "already in one kernel"
        return self.verdict.rule


class _Costs:
    """Kernel figures for the greedy loop: pointwise groups from their kept sums
    (`fusion.pointwise`, exact), other kernels from the cost model, each group's cached
    until it changes. Kernels the cost model prices are remembered by their structure
    (`ir.repeats.kernel_signature`), so each decoder layer's candidates after the first are
    looked up, not priced: the stock roofline model reads nothing else of a kernel (not with
    a calibration, tiling re-reads by node name, or another model, which price every one)."""

    def __init__(self, part: Partition, cost: CostModel) -> None:
        self.part, self.cost = part, cost
        self.pointwise = PointwiseCosts(part, cost)
        self.cached: dict[str, Figures] = {}
        self.by_structure: dict[tuple, tuple[Figures, int]] | None = None
        if type(cost) is CostModel and not cost.rereads and type(cost.reread) is TiledReread \
                and cost.target.calibration is None:
            self.by_structure = {}

    def group(self, key: str) -> Figures:
        figures = self.cached.get(key)
        if figures is None:
            figures = self.pointwise.figures(key) if self.pointwise.has(key) else self.exact_group(key)
            self.cached[key] = figures
        return figures

    def _priced(self, kernel: Kernel, working: bool) -> tuple[Figures, int]:
        """The kernel's figures and (when `working`) its working set, from the memo or priced."""
        part, memo = self.part, self.by_structure
        signature = None
        if memo is not None:
            signature = (working, kernel_signature(kernel, part.types, part.nodes))
            known = memo.get(signature)
            if known is not None:
                return known
        ws = working_set(part.graph, kernel, self.cost.target, types=part.types, nodes=part.nodes).bytes \
            if working else 0
        k = self.cost.kernel_cost(part.graph, kernel, part.types)
        priced = Figures(k.time, k.bytes.get(self.cost.home, 0), k.total_flops), ws
        if memo is not None:
            memo[signature] = priced
        return priced

    def exact_group(self, key: str) -> Figures:
        return self._priced(self.part.kernel(key), False)[0]

    def streamed(self, kernel: Kernel) -> tuple[float, WorkingSet]:
        """A layer kernel's streamed time and stage buffers, from the memo or priced."""
        part, memo = self.part, self.by_structure
        signature = ("layer", kernel_signature(kernel, part.types, part.nodes)) if memo is not None else None
        known = memo.get(signature) if memo is not None else None
        if known is None:
            known = (self.cost.kernel_cost(part.graph, kernel, part.types, streamed=True).time,
                     working_set(part.graph, kernel, self.cost.target, layer=True, types=part.types))
            if memo is not None:
                memo[signature] = known
        return known

    def candidate(self, a: str, b: str) -> tuple[Figures, int, Sums | None]:
        """The merged kernel's figures, its working set, and its sums when pointwise."""
        if self.pointwise.has(a) and self.pointwise.has(b):
            sums, figures, ws = self.pointwise.candidate(a, b)
            return figures, ws, sums
        return self.exact(a, b) + (None,)

    def exact(self, a: str, b: str) -> tuple[Figures, int]:
        """The merged kernel's figures and working set from the cost model (any kernel)."""
        return self._priced(self.part.kernel_of(self.part.merged_members(a, b)), True)

    def merged(self, survivor: str, gone: str, sums: Sums | None) -> None:
        self.cached.pop(survivor, None)
        self.cached.pop(gone, None)
        self.pointwise.merged(survivor, gone, sums)


def _evaluate(part: Partition, costs: _Costs, policy: FusionPolicy, capacity: int,
              producer: str, consumer: str, blocks: dict[str, frozenset[str]]) -> tuple[Evaluation, float]:
    a, b = part.group_of(producer), part.group_of(consumer)
    subject = f"%{producer} -> %{consumer}"
    if a == b:
        return Evaluation(subject, producer, consumer, Verdict(True, "legal"), None, capacity, None,
                          None, None, "already-fused"), 0.0
    verdict = check_merge(part, a, b, path=False)
    if not verdict.legal:
        return Evaluation(subject, producer, consumer, verdict, None, capacity, None, None, None,
                          "refused"), 0.0
    if policy.keep_blocks_apart:
        sides = [blocks.get(g, frozenset()) for g in (a, b)]
        if sides[0] and sides[1] and sides[0] != sides[1]:
            boundary = Verdict(False, "layer-boundary", f"{', '.join(sorted(sides[0]))} and "
                               f"{', '.join(sorted(sides[1]))} stream as separate layer kernels")
            return Evaluation(subject, producer, consumer, boundary, None, capacity, None, None, None,
                              "refused"), 0.0
    ka, kb = costs.group(a), costs.group(b)
    fused, ws, _ = costs.candidate(a, b)
    s = Score(ka.time + kb.time - fused.time, ka.home_bytes + kb.home_bytes - fused.home_bytes, 1,
              fused.total_flops - ka.total_flops - kb.total_flops)  # = policy.score on the kernels
    separate = ka.time + kb.time
    if ws > capacity:
        return Evaluation(subject, producer, consumer, verdict, ws, capacity, separate, fused.time,
                          s.as_dict(), "over-capacity"), 0.0
    if not policy.profitable(s):
        return Evaluation(subject, producer, consumer, verdict, ws, capacity, separate, fused.time,
                          s.as_dict(), "unprofitable"), 0.0
    return Evaluation(subject, producer, consumer, verdict, ws, capacity, separate, fused.time,
                      s.as_dict(), "fuse"), s.saved_seconds


def _edges(graph: Graph, part: Partition) -> list[tuple[str, str]]:
    edges = []
    for node in graph.nodes:
        if part.group_of(node.name) is None:
            continue
        for operand in dict.fromkeys(node.operands):
            if part.group_of(operand) is not None:
                edges.append((operand, node.name))
    return edges


def greedy_fuse(graph: Graph, cost: CostModel, policy: FusionPolicy,
                costs: _Costs | None = None) -> tuple[Partition, dict[str, Evaluation]]:
    """Merge the best profitable legal candidate first; re-score candidates as groups change.

    A merge re-scores only the edges still between two groups that touch the merged one;
    each score costs time in the smaller or later of the two groups (kept facts and sums,
    `fusion.partition` and `fusion.pointwise`), so a long chain fuses in about n log n.
    A cycle is refused without its path (`check_merge(path=False)`); the paths of the
    refusals that stay final are found afterwards (`_cycle_paths`). `costs`: the figures
    of a fresh partition of `graph` (kept by the caller, with what they remember)."""
    costs = costs if costs is not None else _Costs(Partition(graph), cost)
    part = costs.part
    block_of = policy.blocks(graph)
    blocks: dict[str, frozenset[str]] = {}  # group -> the repeated blocks its members belong to
    for n, block in block_of.items():
        key = part.group_of(n)
        if key is not None:
            blocks[key] = blocks.get(key, frozenset()) | {block}
    capacity = fast_capacity(cost.target)
    edges = _edges(graph, part)
    version = {k: 0 for k in part.members}
    final: dict[str, Evaluation] = {}
    heap: list[tuple[float, int, int, str, str, tuple]] = []
    merges: list[tuple[str, str]] = []  # every merge, in order
    cycles: dict[str, tuple[int, str, str]] = {}  # subject refused as a cycle -> (merges made, groups)

    def push(index: int) -> None:
        producer, consumer = edges[index]
        ev, saving = _evaluate(part, costs, policy, capacity, producer, consumer, blocks)
        final[ev.subject] = ev
        a, b = part.group_of(producer), part.group_of(consumer)
        if ev.verdict.rule == "cycle":
            cycles[ev.subject] = (len(merges), a, b)
        else:
            cycles.pop(ev.subject, None)
        if ev.decision == "fuse":
            heapq.heappush(heap, (-saving, index, 0, producer, consumer, (a, version[a], b, version[b])))

    for i in range(len(edges)):
        push(i)
    by_group: dict[str, set[int]] = {}  # group -> edges between it and another group
    for i, (p, c) in enumerate(edges):
        by_group.setdefault(part.group_of(p), set()).add(i)
        by_group.setdefault(part.group_of(c), set()).add(i)
    while heap:
        _, index, _, producer, consumer, stamp = heapq.heappop(heap)
        a, va, b, vb = stamp
        if part.group_of(producer) != a or part.group_of(consumer) != b or version.get(a) != va or version.get(b) != vb:
            continue  # stale: re-scored when its groups changed
        subject = f"%{producer} -> %{consumer}"
        verdict = check_merge(part, a, b, path=False)  # other merges may have opened a path between a and b
        if not verdict.legal:
            final[subject] = replace(final[subject], verdict=verdict, decision="refused")
            cycles[subject] = (len(merges), a, b)  # the only rule another merge can break
            continue
        sums = costs.candidate(a, b)[2] if costs.pointwise.has(a) and costs.pointwise.has(b) else None
        merges.append((a, b))
        survivor = part.merge(a, b)
        gone = b if survivor == a else a
        costs.merged(survivor, gone, sums)
        if a in blocks or b in blocks:
            blocks[survivor] = blocks.pop(a, frozenset()) | blocks.pop(b, frozenset())
        version[survivor] = version.get(survivor, 0) + 1
        version.pop(gone, None)
        ea, eb = by_group.pop(a, set()), by_group.pop(b, set())
        if len(ea) < len(eb):
            ea, eb = eb, ea
        ea |= eb
        affected = [i for i in ea if part.group_of(edges[i][0]) != part.group_of(edges[i][1])]
        by_group[survivor] = set(affected)  # edges now inside the group are never scored again
        final[subject] = replace(final[subject], decision="fused")
        for i in sorted(affected):
            push(i)
    for subject, ev in final.items():  # ends joined through other merges
        if ev.decision != "fused" and part.group_of(ev.producer) == part.group_of(ev.consumer):
            final[subject] = replace(ev, decision="already-fused")
    kept = {s: cycles[s] for s, ev in final.items() if ev.decision == "refused" and ev.verdict.rule == "cycle"}
    for subject, verdict in _cycle_paths(graph, merges, kept).items():
        final[subject] = replace(final[subject], verdict=verdict)
    return part, final


def _cycle_paths(graph: Graph, merges: list[tuple[str, str]],
                 refusals: dict[str, tuple[int, str, str]]) -> dict[str, Verdict]:
    """The cycle refusals' verdicts with the paths they would close: the greedy loop's merges
    replayed on a fresh partition up to the moment each refusal was made (`refusals`:
    subject -> merges made before it, its two groups), and the path found there.

    The partition is a function of its merges, so each path is the one the refusal would
    have named when it was made; only the refusals the ledger keeps pay for their paths."""
    if not refusals:
        return {}
    made: dict[int, list[tuple[str, str, str]]] = {}
    for subject, (count, a, b) in refusals.items():
        made.setdefault(count, []).append((subject, a, b))
    part = Partition(graph)
    verdicts = {}
    for count in range(max(made) + 1):
        for subject, a, b in made.get(count, ()):
            verdicts[subject] = cycle_verdict(part.would_cycle(a, b))
        if count < max(made):
            part.merge(*merges[count])
    return verdicts


def stream_layers(part: Partition, costs: _Costs, policy: FusionPolicy, ledger: Ledger,
                  pass_name: str) -> set[str]:
    """Dataflow step: each repeated block becomes one kernel when legal, fits, and pays.

    Returns the keys of the layer groups formed."""
    layers: set[str] = set()
    blocks: dict[str, list[str]] = {}
    block_of = policy.blocks(part.graph)
    for node in part.graph.nodes:
        key = part.group_of(node.name)
        block = block_of.get(node.name)
        if key is None or block is None:
            continue
        keys = blocks.setdefault(block, [])
        if key not in keys:
            keys.append(key)
    capacity = chip_capacity(costs.cost.target)
    for block, keys in blocks.items():
        keys = [k for k in keys if k in part.members]
        if len(keys) < 2:
            continue
        subject = f"layer {block}"
        verdict = check_layer(part, keys)
        if not verdict.legal:
            ledger.record(pass_name, subject, "refused", f"rule '{verdict.rule}': {verdict.detail}",
                              rule=verdict.rule, groups=len(keys))
            continue
        merged = part.kernel_of([n for k in keys for n in part.members[k]])
        fused, ws = costs.streamed(merged)
        separate = sum(costs.exact_group(k).time for k in keys)
        data = dict(rule="stream-layer", groups=len(keys), nodes=len(merged.nodes), working_set=ws.bytes,
                    capacity=capacity, separate_time=separate, fused_time=fused)
        if ws.bytes > capacity:
            ledger.record(pass_name, subject, "refused",
                              f"rule 'capacity': stage buffers need {ws.bytes} B, SRAM holds {capacity} B",
                              **{**data, "rule": "capacity"})
            continue
        if fused >= separate - policy.min_saving:
            ledger.record(pass_name, subject, "refused",
                              f"rule 'slowdown': fused {fused * 1e6:.3f} us vs separate {separate * 1e6:.3f} us",
                              **{**data, "rule": "slowdown"})
            continue
        survivor = keys[0]
        for k in keys[1:]:
            survivor = part.merge(survivor, k)
        layers.add(survivor)
        ledger.record(pass_name, subject, "fused",
                          f"{len(merged.nodes)} ops stream as one kernel; {separate / fused:.2f}x faster predicted",
                          **data)
    return layers


def apply_groups(graph: Graph, groups: Iterable[tuple[Sequence[str], bool]]) -> Graph:
    """The graph with every multi-node group declared and nodes in kernel order. `groups`:
    (member names in graph order, whether it streams as a layer kernel), in graph order of
    their first members."""
    declared, assignment = [], {}
    nodes = graph.node_map()
    for members, layer in groups:
        if len(members) < 2:
            continue
        gid = len(declared)
        kind, anchor = group_kind([nodes[n] for n in members], layer)
        declared.append(Group(gid, GroupPlan(kind=kind, anchor=anchor)))
        for n in members:
            assignment[n] = gid
    grouped = graph.with_nodes([n.with_(group=assignment.get(n.name)) for n in graph.nodes])
    grouped = Graph(grouped.name, grouped.inputs, grouped.nodes, grouped.outputs, tuple(declared))
    ordered = [n for k in kernels(grouped) for n in k.nodes]
    return Graph(grouped.name, grouped.inputs, tuple(ordered), grouped.outputs, tuple(declared))


def decide(graph: Graph, cost: CostModel, policy: FusionPolicy, pass_name: str) -> Decisions:
    """What fusing `graph` decides: the greedy merges, then (where the policy streams
    layers) each repeated block as one kernel; the ledger records in the order written."""
    costs = _Costs(Partition(graph), cost)
    part, evaluations = greedy_fuse(graph, cost, policy, costs)
    edges = []
    for subject in sorted(evaluations, key=lambda s: _edge_order(part, evaluations[s])):
        ev = evaluations[subject]
        if ev.decision == "already-fused":
            continue
        edges.append(Record(subject, "fused" if ev.decision in ("fused", "fuse") else "refused",
                            ev.reason() if ev.decision not in ("fused", "fuse") else ev.verdict.rule,
                            dict(rule=_rule_of(ev), legal=ev.verdict.legal, working_set=ev.capacity_bytes,
                                 capacity=ev.capacity_limit, separate_time=ev.separate_time,
                                 fused_time=ev.fused_time, score=ev.score)))
    layer_keys: set[str] = set()
    streamed = Ledger()
    if policy.keep_blocks_apart:
        layer_keys = stream_layers(part, costs, policy, streamed, pass_name)
    layers = tuple(Record(d.subject, d.choice, d.reason, dict(d.data)) for d in streamed)
    groups = tuple((tuple(m), part.group_of(m[0]) in layer_keys) for m in part.groups())
    return Decisions(groups, tuple(edges), layers)


@register_pass
@dataclass(frozen=True)
class Fuse(Pass):
    """Group ops into kernels (legality, capacity, then profitability); ledger every choice."""

    name: ClassVar[str] = "fuse"
    summary: ClassVar[str] = ("group ops into kernels: legality, fast-tier capacity, then the cost "
                              "model's profitability; every candidate recorded in the ledger")
    min_saving: float = 0.0
    stream_layers: bool = True
    must_fuse: tuple[str, ...] = ()
    reuse: bool = field(default=True, metadata={
        "doc": "decide fusion once for a few of a model's repeated layers and apply it to every copy "
               "(codesign.fusion.repeated; the same groups and ledger as fusing every layer)"})
    model: str = field(default="ideal", metadata={
        "doc": "the cost model profitability asks: ideal (peaks) or calibrated (the target's calibration). "
               "Ideal by default: on the H200 the calibrated decisions ran GPT-2 3% and an MLP block 6% "
               "slower (BENCHMARKS.md), so they stay opt-in until the calibration meets its goals"})

    def __post_init__(self) -> None:
        if not -1.0 <= self.min_saving <= 1.0:  # seconds; also refuses nan and inf
            raise ValueError(f"min_saving must be seconds in [-1, 1], got {self.min_saving}")
        if self.model not in ("ideal", "calibrated"):
            raise ValueError(f"model must be 'ideal' or 'calibrated', got {self.model!r}")

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        if ctx.target is None:
            raise PipelineError("the fuse pass needs a target (pass --target, or compile(..., target=...))")
        if graph.groups:
            graph = Graph(graph.name, graph.inputs, tuple(n.with_(group=None) for n in graph.nodes),
                          graph.outputs, ())
        streaming = self.stream_layers and ctx.target.streams_layers
        policy = FusionPolicy(self.min_saving, streaming)
        target = ctx.target if self.model == "calibrated" else ctx.target.model_copy(update={"calibration": None})
        cost = CostModel(target)
        decided = None
        if self.reuse and ctx.options.get("reuse", True):
            short = shorten(graph)  # decide for a few of the repeated layers, apply to all
            if short is not None:
                decided = short.expand(decide(short.graph, cost, policy, self.name))
        if decided is None:
            decided = decide(graph, cost, policy, self.name)
        for r in decided.edges + decided.layers:
            ctx.ledger.record(self.name, r.subject, r.choice, r.reason, **r.data)
        result = apply_groups(graph, decided.groups)
        must_fuse = self.must_fuse or tuple(ctx.options.get("must_fuse", ()))
        if must_fuse:
            _check_must_fuse(result, must_fuse, ctx, self.name)
        return result


def _rule_of(ev: Evaluation) -> str:
    return {"refused": ev.verdict.rule, "over-capacity": "capacity", "unprofitable": "slowdown"}.get(
        ev.decision, ev.verdict.rule)


def _edge_order(part: Partition, ev: Evaluation) -> tuple[int, int]:
    return part.order[ev.consumer], part.order[ev.producer]


def _check_must_fuse(graph: Graph, names: tuple[str, ...], ctx: PassContext, pass_name: str) -> None:
    nodes = graph.node_map()
    missing = [n for n in names if n not in nodes]
    if missing:
        raise FusionError(f"must_fuse names unknown nodes: {', '.join('%' + m for m in missing)}")
    groups = {n: nodes[n].group for n in names}
    if len(set(groups.values())) == 1 and None not in groups.values():
        return
    wanted = set(names)
    refusals = [d for d in ctx.ledger.by_pass(pass_name) if d.choice == "refused"
                and any(f"%{n} " in d.subject + " " for n in wanted)]
    lines = "\n".join(f"  {d.subject}: {d.reason}" for d in refusals) or "  (no candidate between them was legal)"
    where = ", ".join(f"%{n} in {'group ' + str(g) if g is not None else 'no group'}" for n, g in groups.items())
    raise FusionError(f"must_fuse: {where} did not end in one kernel. The ledger says:\n{lines}")
