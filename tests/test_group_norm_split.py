"""The `split-group-norm` rewrite: exact against F.group_norm on fresh inputs, on every backend,
and applied only where the host backend has no group-norm kernel of its own."""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported anywhere

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import codesign  # noqa: E402
from codesign.ir import run_graph  # noqa: E402
from codesign.ir.builder import GraphBuilder  # noqa: E402
from codesign.ir.graph import Graph, Input, InputKind  # noqa: E402
from codesign.ir.types import DType, TensorType  # noqa: E402
from codesign.passes import PassContext, PassManager  # noqa: E402
from codesign.passes.group_norm import chunks  # noqa: E402
from codesign.targets import load_target  # noqa: E402
from helpers import rel_err  # noqa: E402


def group_norm_graph(shape: tuple[int, ...], groups: int, params: int, dtype: DType = DType.f32) -> Graph:
    b = GraphBuilder("gn")
    x = b.add_input(Input("x", TensorType(shape, dtype)))
    ps = [b.add_input(Input(name, TensorType((shape[1],), dtype), InputKind.param, f"gn.{name}"))
          for name in ("weight", "bias")[:params]]
    return b.finish([b.add("group_norm", [x, *ps], {"groups": groups, "eps": 1e-5})])


def split(graph: Graph, chunk: int, target=None) -> tuple[Graph, PassContext]:
    ctx = PassContext(target=target)
    return PassManager(f"split-group-norm{{when=always chunk={chunk}}}").run(graph, ctx), ctx


@pytest.mark.parametrize("shape,groups,params,chunk", [
    ((2, 16, 8, 8), 4, 2, 16),      # 4 chunks per channel
    ((1, 32, 6, 10), 8, 1, 15),     # 60 = 4·15: 4 chunks, weight only
    ((3, 12, 7), 3, 0, 4096),       # rank 3, an odd length: one chunk
    ((2, 8, 4, 4, 6), 2, 2, 8),     # rank 5 (video)
    ((4, 6), 2, 2, 1),              # no spatial dims
])
def test_split_matches_group_norm(shape, groups, params, chunk):
    graph = group_norm_graph(shape, groups, params)
    out, ctx = split(graph, chunk)
    assert not any(n.op == "group_norm" for n in out.nodes)
    (decision,) = ctx.ledger.by_pass("split-group-norm")
    spatial = 1
    for s in shape[2:]:
        spatial *= s
    assert decision.choice == "split" and decision.data["chunks"] == chunks(spatial, chunk)
    g = torch.Generator().manual_seed(hash(shape) % 1000)
    x = torch.randn(shape, generator=g) * 3 + 2
    state = {n: torch.randn(shape[1], generator=g) for n in ("weight", "bias")[:params]}
    ref = F.group_norm(x, groups, state.get("weight"), state.get("bias"), 1e-5)
    (y,) = run_graph(out, [x], state)
    assert rel_err(y, ref) <= 1e-5


def test_large_offset_keeps_precision():
    """Each chunk's variance is two-pass and the chunks combine exactly (law of total
    variance): a mean 10^4 standard deviations away loses nothing E[x²] − mean² would."""
    graph = group_norm_graph((1, 8, 32, 32), 2, 0)
    out, _ = split(graph, 64)
    x = torch.randn(1, 8, 32, 32, generator=torch.Generator().manual_seed(3)) + 1e4
    ref = F.group_norm(x.double(), 2, eps=1e-5)
    (y,) = run_graph(out, [x], {})
    assert rel_err(y.double(), ref) <= 1e-3  # f32 holds 1e4 + x only to ~1e-3 of x


def test_chunks():
    assert chunks(262144, 4096) == 64
    assert chunks(4096, 4096) == 1
    assert chunks(96, 16) == 4  # 96 = 2^5·3: chunks of 24 ≥ 16
    assert chunks(7, 1) == 1


class Block(nn.Module):
    """A ResNet-style block of a VAE decoder: group norm, SiLU, conv."""

    def __init__(self):
        super().__init__()
        self.norm = nn.GroupNorm(4, 16)
        self.conv = nn.Conv2d(16, 16, 3, padding=1)

    def forward(self, x):
        return x + self.conv(F.silu(self.norm(x)))


@pytest.mark.parametrize("backend", ["triton", "cpp", "interpreter"])
def test_compiled_block_on_every_backend(backend):
    torch.manual_seed(0)
    model = Block().eval()
    x = torch.randn(2, 16, 16, 16)
    cm = codesign.compile(model, (x,), target="h200", backend=backend)
    decisions = [d for d in cm.ledger if d.pass_name == "split-group-norm"]
    assert [d.choice for d in decisions] == ["split"]
    assert "256 elements" in decisions[0].reason
    fresh = torch.randn(2, 16, 16, 16)
    with torch.no_grad():
        assert rel_err(cm(fresh), model(fresh)) <= 1e-5


def test_kept_where_the_backend_has_a_group_norm_kernel():
    graph = group_norm_graph((2, 16, 8, 8), 4, 2)
    ctx = PassContext(target=load_target("cpu-host"))
    out = PassManager("split-group-norm").run(graph, ctx)
    assert out is graph
    (decision,) = ctx.ledger.by_pass("split-group-norm")
    assert decision.choice == "kept" and "cpp backend has a group-norm kernel" in decision.reason
    ctx = PassContext(target=load_target("h200"))
    assert any(n.op == "mean" for n in PassManager("split-group-norm").run(graph, ctx).nodes)
    ctx = PassContext()
    assert PassManager("split-group-norm").run(graph, ctx) is graph
    assert "no target" in ctx.ledger.by_pass("split-group-norm")[0].reason


def test_options_are_checked():
    with pytest.raises(ValueError, match="when="):
        PassManager("split-group-norm{when=sometimes}")
    with pytest.raises(ValueError, match="chunk=0"):
        PassManager("split-group-norm{chunk=0}")


class HandWrittenNorm(nn.Module):
    """A channels-first layer norm as HF's ConvNeXt writes it: a mean, then the mean of the
    squared deviations from it, over the same rows."""

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        v = (x - u).pow(2).mean(1, keepdim=True)
        return (x - u) / torch.sqrt(v + 1e-6)


@pytest.mark.parametrize("target,backend", [("cpu-host", "cpp"), ("h200", "triton")])
def test_statistics_of_the_same_rows_are_one_kernel(target, backend):
    """Fusion's `same-rows` rule: both means (the second reading the first) in one group, which
    each backend runs as one kernel that matches eager."""
    x = torch.randn(2, 16, 5, 7) * 3 + 1
    cm = codesign.compile(HandWrittenNorm(), (x,), target=target, backend=backend)
    graph = cm.graph_for(backend)
    means = [n for n in graph.nodes if n.op == "mean"]
    assert len(means) == 2 and means[0].group is not None and means[0].group == means[1].group
    fresh = torch.randn(2, 16, 5, 7) * 3 + 1
    assert rel_err(cm(fresh), HandWrittenNorm()(fresh)) <= 1e-5
