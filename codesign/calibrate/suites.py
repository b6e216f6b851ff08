"""What `codesign calibrate` measures: small programs that span the efficiency model's axes.

Each case is an `nn.Module` compiled by codesign itself, so the kernels measured are the
kernels codesign generates (and, for GEMMs, the vendor library beside them):
- GEMMs over a grid of (M, N, K): skinny, square, wave-quantised (tile counts just over a
  multiple of the compute units) and short-K shapes;
- attention: sequence lengths, head dims, causal or not, grouped-query;
- memory-bound kernels: copies, pointwise chains with and without transcendental
  functions, row reductions, softmax, norms, strided (transposed) and gathered reads, at
  sizes from a few KiB (latency) to hundreds of MiB (bandwidth);
- convolutions (CPU): 3x3, 1x1, strided, grouped and depthwise, a 7x7 stem, each with the
  batch norm / activation / residual its network fuses after it, and a VAE-style group norm
  + SiLU before a conv and a nearest upsample into one; pooling (max with a fused batch norm
  + ReLU, average, global); routed mixtures of experts;
- launches: programs of many tiny kernels, for the host's cost per launch.
Several independent kernels share one module (one compile, one profile run each). No case
repeats a shape of the validation families (`benchmarks/cost_validation.py`): the validation
stays out of sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Case:
    """One calibration program: a name, what it measures, and how to build it on a device."""

    name: str
    axis: str  # gemm | attention | memory | conv | moe | launch
    build: Callable[[torch.device, torch.dtype], tuple[nn.Module, tuple[torch.Tensor, ...]]]
    dtype: torch.dtype = torch.bfloat16
    gemms: tuple[tuple[int, int, int], ...] = ()  # (M, N, K) of the vendor GEMMs to time beside


class _Gemms(nn.Module):
    """Independent products x_i @ w_i, one kernel each."""

    def __init__(self, shapes, device, dtype):
        super().__init__()
        self.w = nn.ParameterList([nn.Parameter(torch.randn(k, n, device=device, dtype=dtype) / k ** 0.5)
                                   for _, n, k in shapes])

    def forward(self, *xs):
        return tuple(x @ w for x, w in zip(xs, self.w))


def _gemms(shapes):
    def build(device, dtype):
        return _Gemms(shapes, device, dtype), tuple(torch.randn(m, k, device=device, dtype=dtype) for m, _, k in shapes)
    return build


class _Attention(nn.Module):
    def __init__(self, specs):
        super().__init__()
        self.specs = specs

    def forward(self, *qkv):
        outs = []
        for (_, _, _, _, _, causal), (q, k, v) in zip(self.specs, zip(qkv[0::3], qkv[1::3], qkv[2::3])):
            if k.shape[1] != q.shape[1]:  # grouped-query: each key head serves several query heads
                rep = q.shape[1] // k.shape[1]
                k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
            outs.append(F.scaled_dot_product_attention(q, k, v, is_causal=causal))
        return tuple(outs)


def _attention(specs):
    """specs: (batch, query heads, key heads, seq, head dim, causal)."""
    def build(device, dtype):
        inputs = []
        for b, hq, hk, s, d, _ in specs:
            inputs += [torch.randn(b, hq, s, d, device=device, dtype=dtype),
                       torch.randn(b, hk, s, d, device=device, dtype=dtype),
                       torch.randn(b, hk, s, d, device=device, dtype=dtype)]
        return _Attention(specs), tuple(inputs)
    return build


class _Memory(nn.Module):
    """Memory-bound kernels of one size: each on its own input, so none fuse together."""

    def __init__(self, rows, cols, device, dtype):
        super().__init__()
        self.norm = nn.LayerNorm(cols, device=device, dtype=dtype)
        self.rms_weight = nn.Parameter(torch.ones(cols, device=device, dtype=dtype))
        self.table = nn.Parameter(torch.randn(4096, cols, device=device, dtype=dtype))

    def forward(self, a, b, c, d, e, f, g, ids):
        copy = a * 1.5
        chain = torch.relu(b * 1.5 + 0.25) * b - 0.5
        special = torch.tanh(c) * torch.exp(-c) + torch.sigmoid(c)
        rowsum = d.sum(-1)
        soft = torch.softmax(e, -1)
        norm = self.norm(f)
        rms = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + 1e-6) * self.rms_weight
        transposed = a.t() * 2.0
        gathered = F.embedding(ids, self.table) * 2.0
        return copy, chain, special, rowsum, soft, norm, rms, transposed, gathered


def _memory(rows, cols):
    def build(device, dtype):
        xs = tuple(torch.randn(rows, cols, device=device, dtype=dtype) for _ in range(7))
        ids = torch.randint(0, 4096, (rows,), device=device)
        return _Memory(rows, cols, device, dtype), (*xs, ids)
    return build


class _Tiny(nn.Module):
    """A chain of `n` tiny kernels: each a pointwise op followed by a reduction, so the
    fusion pass cannot merge them into one."""

    def __init__(self, n):
        super().__init__()
        self.n = n

    def forward(self, x):
        for _ in range(self.n):
            x = torch.softmax(x * 1.01, -1)
        return x


def _tiny(n):
    def build(device, dtype):
        return _Tiny(n), (torch.randn(8, 64, device=device, dtype=dtype),)
    return build


class _TinyWide(nn.Module):
    """`n` tiny kernels, each reading `width` tensors: the host's cost per argument."""

    def __init__(self, n, width):
        super().__init__()
        self.n, self.width = n, width

    def forward(self, *xs):
        x = xs[0]
        for i in range(self.n):
            x = torch.softmax(x + sum(xs[1:self.width]) * (1.0 + i), -1)
        return x


def _tiny_wide(n, width):
    def build(device, dtype):
        return _TinyWide(n, width), tuple(torch.randn(8, 64, device=device, dtype=dtype) for _ in range(width))
    return build


class _Prologue(nn.Module):
    """Products whose left operand is a pointwise function of an input (a norm's scale, an
    activation): fused as prologues, evaluated again per column block of tiles."""

    def __init__(self, shapes, device, dtype):
        super().__init__()
        self.w = nn.ParameterList([nn.Parameter(torch.randn(k, n, device=device, dtype=dtype) / k ** 0.5)
                                   for _, n, k in shapes])
        self.scale = nn.ParameterList([nn.Parameter(torch.rand(k, device=device, dtype=dtype) + 0.5)
                                       for _, _, k in shapes])

    def forward(self, *xs):
        return tuple((x * s) @ w for x, s, w in zip(xs, self.scale, self.w))


def _prologue(shapes):
    def build(device, dtype):
        return _Prologue(shapes, device, dtype), tuple(torch.randn(m, k, device=device, dtype=dtype)
                                                       for m, _, k in shapes)
    return build


class _Epilogue(nn.Module):
    """Linear layers with what decoders fuse after them: a residual add, GELU, a gate."""

    def __init__(self, m, n, k, device, dtype):
        super().__init__()
        self.up = nn.Linear(k, n, bias=True, device=device, dtype=dtype)
        self.down = nn.Linear(n, k, bias=False, device=device, dtype=dtype)
        self.gate = nn.Linear(k, n, bias=False, device=device, dtype=dtype)

    def forward(self, x, y, r):
        return F.gelu(self.up(x)), self.down(y) + r, F.silu(self.gate(x)) * y


def _epilogue(m, n, k):
    def build(device, dtype):
        return _Epilogue(m, n, k, device, dtype), (torch.randn(m, k, device=device, dtype=dtype),
                                                   torch.randn(m, n, device=device, dtype=dtype),
                                                   torch.randn(m, k, device=device, dtype=dtype))
    return build


def _rotate(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), -1)


class _RopeAttention(nn.Module):
    """Attention on rotary-embedded queries and keys (q·cos + rotate(q)·sin), as decoders run it."""

    def forward(self, q, k, v, cos, sin):
        return F.scaled_dot_product_attention(q * cos + _rotate(q) * sin, k * cos + _rotate(k) * sin, v,
                                              is_causal=True)


def _rope_attention(b, h, s, d):
    def build(device, dtype):
        qkv = tuple(torch.randn(b, h, s, d, device=device, dtype=dtype) for _ in range(3))
        angle = torch.arange(s, device=device, dtype=torch.float32)[:, None] * torch.rand(d, device=device)
        return _RopeAttention(), (*qkv, angle.cos().to(dtype), angle.sin().to(dtype))
    return build


class _SmallDecoder(nn.Module):
    """A GPT-2 of tiny width (transformers, random weights): a real mix of small kernels whose
    wall time is the host's, for the host's cost per launch."""

    def __init__(self, device, dtype):
        super().__init__()
        from transformers import GPT2Config, GPT2LMHeadModel
        self.model = GPT2LMHeadModel(GPT2Config(n_embd=64, n_layer=2, n_head=2, vocab_size=512, n_positions=64,
                                                attn_implementation="sdpa")).to(device=device, dtype=dtype)

    def forward(self, ids):
        return self.model(input_ids=ids, use_cache=False).logits


def _small_decoder(device, dtype):
    return _SmallDecoder(device, dtype), (torch.randint(0, 512, (1, 32), device=device),)


class _Linears(nn.Module):
    """Independent linear layers (weights stored [out, in], as models hold them), one kernel each."""

    def __init__(self, shapes, device, dtype):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(k, n, bias=False, device=device, dtype=dtype) for _, n, k in shapes])

    def forward(self, *xs):
        return tuple(layer(x) for layer, x in zip(self.layers, xs))


def _linears(shapes):
    def build(device, dtype):
        return _Linears(shapes, device, dtype), tuple(torch.randn(m, k, device=device, dtype=dtype) for m, _, k in shapes)
    return build


@dataclass(frozen=True)
class ConvSpec:
    """One conv block of a conv case: conv(cin -> cout, kernel, stride, groups) on a
    [batch, cin, size, size] input, then what its network fuses after it."""

    cin: int
    cout: int
    size: int
    kernel: int = 3
    stride: int = 1
    groups: int = 1
    after: str = "bn_relu"  # bn_relu | bn | bn_add (residual) | none
    batch: int = 1


class _ConvBlock(nn.Module):
    def __init__(self, spec: ConvSpec, device, dtype):
        super().__init__()
        self.spec = spec
        self.conv = nn.Conv2d(spec.cin, spec.cout, spec.kernel, spec.stride, spec.kernel // 2, groups=spec.groups,
                              bias=spec.after == "none", device=device, dtype=dtype)
        self.bn = nn.BatchNorm2d(spec.cout, device=device, dtype=dtype)
        with torch.no_grad():  # running statistics away from the identity, as a trained network has
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x, residual=None):
        y = self.conv(x)
        if self.spec.after == "none":
            return y
        y = self.bn(y)
        if self.spec.after == "bn_add":
            return torch.relu(y + residual)
        return torch.relu(y) if self.spec.after == "bn_relu" else y


class _Convs(nn.Module):
    """Independent conv blocks, each on its own input: one kernel each (conv + its epilogue)."""

    def __init__(self, specs, device, dtype):
        super().__init__()
        self.blocks = nn.ModuleList([_ConvBlock(s, device, dtype) for s in specs])

    def forward(self, *xs):
        outs, i = [], 0
        for block in self.blocks:
            if block.spec.after == "bn_add":
                outs.append(block(xs[i], xs[i + 1]))
                i += 2
            else:
                outs.append(block(xs[i]))
                i += 1
        return tuple(outs)


def _convs(specs):
    def build(device, dtype):
        inputs = []
        for s in specs:
            inputs.append(torch.randn(s.batch, s.cin, s.size, s.size, device=device, dtype=dtype))
            if s.after == "bn_add":
                out = (s.size - 1) // s.stride + 1
                inputs.append(torch.randn(s.batch, s.cout, out, out, device=device, dtype=dtype))
        return _Convs(specs, device, dtype), tuple(inputs)
    return build


class _DecoderConvs(nn.Module):
    """What a VAE decoder runs: group norm + SiLU, a 3x3 conv, a nearest x2 upsample into a
    3x3 conv, and a conv down to a few output channels."""

    def __init__(self, channels, groups, device, dtype):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, device=device, dtype=dtype)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, device=device, dtype=dtype)
        self.up = nn.Conv2d(channels, channels, 3, padding=1, device=device, dtype=dtype)
        self.out = nn.Conv2d(channels, 3, 3, padding=1, device=device, dtype=dtype)

    def forward(self, a, b, c, d):
        return (F.silu(self.norm(a)), self.conv(b), self.up(F.interpolate(c, scale_factor=2.0, mode="nearest")),
                self.out(d))


def _decoder_convs(channels, groups, size):
    def build(device, dtype):
        return _DecoderConvs(channels, groups, device, dtype), tuple(
            torch.randn(1, channels, size, size, device=device, dtype=dtype) for _ in range(4))
    return build


class _Pools(nn.Module):
    """Pooling as CNNs run it: a stem's batch norm + ReLU + 3x3/2 max pool, a 2x2 max pool,
    a 2x2 average pool and a global average pool."""

    def __init__(self, channels, device, dtype):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, device=device, dtype=dtype)

    def forward(self, a, b, c, d):
        return (F.max_pool2d(torch.relu(self.bn(a)), 3, 2, 1), F.max_pool2d(b, 2), F.avg_pool2d(c, 2),
                F.adaptive_avg_pool2d(d, 1))


def _pools(batch, channels, size):
    def build(device, dtype):
        return _Pools(channels, device, dtype), tuple(
            torch.randn(batch, channels, size, size, device=device, dtype=dtype) for _ in range(4))
    return build


class _Moe(nn.Module):
    """A routed sparse mixture of experts (transformers' Mixtral block, random weights)."""

    def __init__(self, hidden, inner, experts, top_k, device, dtype):
        super().__init__()
        from transformers import MixtralConfig
        from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock
        cfg = MixtralConfig(hidden_size=hidden, intermediate_size=inner, num_local_experts=experts,
                            num_experts_per_tok=top_k, num_hidden_layers=1, num_attention_heads=4,
                            num_key_value_heads=4, vocab_size=64)
        self.block = MixtralSparseMoeBlock(cfg).to(device=device, dtype=dtype)
        with torch.no_grad():
            for p in self.block.parameters():
                p.normal_(0.0, 0.02)

    def forward(self, x):
        out = self.block(x)
        return out[0] if isinstance(out, tuple) else out


def _moe(tokens, hidden, inner, experts, top_k):
    def build(device, dtype):
        return _Moe(hidden, inner, experts, top_k, device, dtype), (
            torch.randn(1, tokens, hidden, device=device, dtype=dtype),)
    return build


def _has_transformers() -> bool:
    import importlib.util
    return importlib.util.find_spec("transformers") is not None


def gpu_cases() -> list[Case]:
    """The GPU suite (sized for a large data-centre GPU; each case runs in well under a second)."""
    square = [(s, s, s) for s in (512, 1024, 2048, 4096, 8192)]
    skinny = [(m, 4096, 4096) for m in (16, 64, 256)] + [(8192, 128, 4096), (8192, 4096, 128)]
    quantised = [(128 * 12, 128 * 12, 4096), (128 * 12 + 128, 128 * 11, 4096), (3072, 3072, 1024)]
    wide = [(4096, 14336, 4096), (4096, 4096, 14336), (2048, 32000, 2048)]
    cases = [Case(f"gemm_{i}", "gemm", _gemms(shapes), gemms=tuple(shapes))
             for i, shapes in enumerate((square, skinny, quantised, wide))]
    cases.append(Case("gemm_fp32", "gemm", _gemms([(2048, 2048, 2048), (4096, 1024, 1024)]), torch.float32,
                      gemms=((2048, 2048, 2048), (4096, 1024, 1024))))
    cases.append(Case("attention", "attention", _attention([
        (4, 16, 16, 1024, 64, False), (4, 16, 16, 1024, 128, True), (2, 32, 8, 2048, 128, True),
        (1, 32, 32, 4096, 128, True), (16, 12, 12, 512, 64, False), (8, 16, 16, 256, 64, False)])))
    for rows, cols in ((64, 256), (1024, 1024), (8192, 4096), (32768, 4096)):
        cases.append(Case(f"memory_{rows}x{cols}", "memory", _memory(rows, cols)))
    cases.append(Case("memory_fp32", "memory", _memory(8192, 4096), torch.float32))
    cases.append(Case("prologue", "gemm", _prologue([(4096, 4096, 4096), (2048, 16384, 2048), (8192, 1024, 1024)])))
    cases.append(Case("epilogue", "gemm", _epilogue(8192, 4096, 1024)))
    cases.append(Case("epilogue_small", "gemm", _epilogue(2048, 2048, 512)))
    cases.append(Case("rope_attention", "attention", _rope_attention(4, 16, 1024, 64)))
    cases.append(Case("rope_attention_long", "attention", _rope_attention(1, 32, 4096, 128)))
    cases.append(Case("launch", "launch", _tiny(24)))
    cases.append(Case("launch_short", "launch", _tiny(4)))
    cases.append(Case("launch_wide", "launch", _tiny_wide(12, 8)))
    if _has_transformers():
        cases.append(Case("launch_model", "launch", _small_decoder))
    return cases


def cpu_cases() -> list[Case]:
    """The CPU suite (sized for a few cores; the whole suite runs in minutes)."""
    gemm = [(s, s, s) for s in (128, 256, 512, 1024)] + [(16, 1024, 1024), (1024, 64, 1024), (1024, 1024, 64)]
    cases = [Case("gemm", "gemm", _gemms(gemm), torch.float32, gemms=tuple(gemm))]
    cases.append(Case("attention", "attention", _attention([
        (1, 8, 8, 256, 64, False), (1, 8, 8, 512, 64, True), (1, 8, 2, 256, 64, True)]), torch.float32))
    linear = [(160, 640, 320), (96, 2048, 256), (320, 256, 960), (128, 96, 768), (64, 3072, 448), (200, 4000, 256)]
    cases.append(Case("linear", "gemm", _linears(linear), torch.float32))
    # sizes of the models' activations (up to a few MiB a tensor); larger outputs than these
    # pay the kernel's first touch of freshly mapped pages, which the model does not price
    for rows, cols in ((16, 256), (256, 1024), (1024, 512), (2048, 1024)):
        cases.append(Case(f"memory_{rows}x{cols}", "memory", _memory(rows, cols), torch.float32))
    cases.append(Case("prologue", "gemm", _prologue([(512, 512, 512), (256, 2048, 256)]), torch.float32))
    cases.append(Case("epilogue", "gemm", _epilogue(192, 1024, 320), torch.float32))
    cases.append(Case("conv", "conv", _convs([
        ConvSpec(40, 40, 20), ConvSpec(96, 96, 12, after="bn"), ConvSpec(32, 64, 24, stride=2),
        ConvSpec(80, 160, 14, kernel=1, after="bn_add"), ConvSpec(48, 96, 18, kernel=1, stride=2, after="bn"),
        ConvSpec(3, 32, 96, kernel=7, stride=2, batch=2)]), torch.float32))
    cases.append(Case("conv_grouped", "conv", _convs([
        ConvSpec(96, 96, 28, groups=96), ConvSpec(144, 144, 14, stride=2, groups=144, after="bn"),
        ConvSpec(64, 64, 16, groups=4), ConvSpec(24, 72, 40, kernel=1, after="bn_relu", batch=2),
        ConvSpec(160, 48, 10, after="none")]), torch.float32))
    cases.append(Case("conv_decoder", "conv", _decoder_convs(48, 8, 12), torch.float32))
    cases.append(Case("conv_decoder_wide", "conv", _decoder_convs(96, 16, 20), torch.float32))
    cases.append(Case("pool", "conv", _pools(2, 48, 40), torch.float32))
    cases.append(Case("pool_small", "conv", _pools(1, 96, 12), torch.float32))
    if _has_transformers():
        cases.append(Case("moe", "moe", _moe(48, 160, 448, 4, 2), torch.float32))
        cases.append(Case("moe_wide", "moe", _moe(96, 320, 640, 8, 2), torch.float32))
    cases.append(Case("rope_attention", "attention", _rope_attention(1, 8, 256, 64), torch.float32))
    cases.append(Case("launch", "launch", _tiny(24), torch.float32))
    cases.append(Case("launch_short", "launch", _tiny(4), torch.float32))
    cases.append(Case("launch_wide", "launch", _tiny_wide(12, 8), torch.float32))
    return cases
