"""Real architectures through the C++ backend against eager (tests/real_models_harness.py says how).

- `test_real_model_fast` (the default run): `FAST`, a spread of the zoo — encoder with a
  padding mask, decoders (dense, masked, MoE with a shared expert), relative-position
  attention, convolution with batch norm, a VAE decoder — at tiny configs.
- `test_real_model_full` (marker `real_models_full`, deselected by default): every other
  model of the zoo, `python -m pytest tests/test_real_models.py -m real_models_full -n 2`;
  `benchmarks/real_models.py` runs them all and writes the JSON.

Each model must match eager or be refused with one of codesign's own errors; a MISMATCH or
a CRASH fails. Below them, one small module per bug the sweep found, each failing before its
fix.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import codesign
from real_models_harness import BY_NAME, MATCH, REFUSED, SKIPPED, ZOO, run_model

FAST = ("bert", "gpt2", "llama-padded", "qwen2-moe", "t5-encoder", "deberta-v2", "resnet", "sd-vae-decoder")
FULL = tuple(e.name for e in ZOO if e.name not in FAST)


def check(name: str) -> None:
    result = run_model(BY_NAME[name])
    if result.status == SKIPPED:
        pytest.skip(result.error)
    if result.status == REFUSED:
        assert result.error and "\n" not in result.error, f"{name}: a refusal must be one line: {result.error!r}"
        return
    assert result.status == MATCH, result.line()


def test_zoo_covers_thirty_architectures_from_four_libraries():
    names = [e.name for e in ZOO]
    assert len(set(names)) == len(names) >= 30
    assert {e.library for e in ZOO} == {"transformers", "diffusers", "torchvision", "timm"}
    assert set(FAST) <= set(names)


@pytest.mark.parametrize("name", FAST)
def test_real_model_fast(name: str):
    """A spread of the zoo compiles, runs as C++ and matches eager on fresh inputs."""
    pytest.importorskip(BY_NAME[name].library)
    check(name)


@pytest.mark.real_models_full
@pytest.mark.parametrize("name", FULL)
def test_real_model_full(name: str):
    check(name)


# -- regressions found by the sweep ----------------------------------------------------------
def compiled(module: nn.Module, *inputs: torch.Tensor):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return codesign.compile(module, inputs, target="cpu-host", backend="cpp")


class Gather(nn.Module):
    def forward(self, x, index):
        return torch.gather(x, 1, index), torch.gather(x, 0, index[:2])


def test_gather_matches_eager_and_checks_its_indices():
    """BERT-family embeddings (the token-type buffer) and DeBERTa's relative attention use
    torch.gather: it was refused as an unsupported ATen op."""
    gen = torch.Generator().manual_seed(11)
    x, index = torch.randn(4, 6, generator=gen), torch.randint(0, 4, (4, 3), generator=gen)
    cm = compiled(Gather(), x, index)
    for _ in range(2):
        x, index = torch.randn(4, 6, generator=gen), torch.randint(0, 4, (4, 3), generator=gen)
        for got, ref in zip(cm(x, index), Gather()(x, index)):
            assert torch.equal(got, ref)
    index[3, 1] = 6  # row 3 feeds only the dim-1 gather, whose x has 6 columns
    with pytest.raises(IndexError, match="gather"):
        cm(x, index)


class SignCeil(nn.Module):
    def forward(self, x, i):
        return torch.sign(x), torch.ceil(x), torch.sign(i), torch.ceil(i)


def test_sign_and_ceil_match_eager_with_nan_and_signed_zeros():
    """DeBERTa-v2's log-bucketed relative positions use sign and ceil (both were refused)."""
    gen = torch.Generator().manual_seed(12)
    x = torch.randn(3, 8, generator=gen) * 3
    x[0, :5] = torch.tensor([float("nan"), -0.0, 0.0, -1.5, 2.0])
    i = torch.randint(-4, 4, (3, 8), generator=gen)
    cm = compiled(SignCeil(), x, i)
    x[1] = torch.randn(8, generator=gen) * 3
    for got, ref in zip(cm(x, i), SignCeil()(x, i)):
        assert got.dtype == ref.dtype
        assert torch.equal(got.nan_to_num(7.0), ref.nan_to_num(7.0))
        assert torch.equal(torch.signbit(got), torch.signbit(ref))


@pytest.mark.parametrize("shape,kwargs", [
    ((1, 3, 5, 4), dict(size=(8, 7), mode="bilinear", align_corners=False)),  # SegFormer's decode head
    ((2, 2, 4, 4), dict(scale_factor=2, mode="bilinear", align_corners=True)),
    ((1, 2, 8, 8), dict(size=(3, 5), mode="bilinear", align_corners=False)),
    ((1, 2, 4, 5), dict(size=(7, 6), mode="bicubic", align_corners=False)),
    ((1, 2, 5), dict(scale_factor=1.5, mode="linear")),
    ((1, 2, 3, 4, 4), dict(size=(5, 6, 7), mode="trilinear")),
], ids=lambda v: v.get("mode") if isinstance(v, dict) else None)
def test_linear_interpolation_matches_eager(shape, kwargs):
    """upsample_bilinear2d (and the other linear modes) were refused: they are core ATen ops
    that no IR op models; torch's own decompositions now lower them to index gathers."""
    class Interpolate(nn.Module):
        def forward(self, x):
            return F.interpolate(x, **kwargs)
    gen = torch.Generator().manual_seed(13)
    cm = compiled(Interpolate(), torch.randn(shape, generator=gen))
    x = torch.randn(shape, generator=gen)
    torch.testing.assert_close(cm(x), Interpolate()(x), rtol=1e-5, atol=1e-6)


class Prod(nn.Module):
    def forward(self, i, b):
        return torch.prod(i, dim=1), torch.prod(b), torch.prod(i)


def test_prod_of_integers_and_booleans_is_int64():
    """torch.prod promotes integer and bool inputs to int64, as sum does."""
    gen = torch.Generator().manual_seed(14)
    i = torch.randint(-3, 4, (3, 5), generator=gen, dtype=torch.int32)
    b = torch.rand(6, generator=gen) > 0.2
    cm = compiled(Prod(), i, b)
    i = torch.randint(-3, 4, (3, 5), generator=gen, dtype=torch.int32)
    b = torch.ones(6, dtype=torch.bool)
    for got, ref in zip(cm(i, b), Prod()(i, b)):
        assert got.dtype == ref.dtype == torch.int64
        assert torch.equal(got, ref)


class MaskedScores(nn.Module):
    """DeBERTa's attention scores: a batched matmul over (batch * heads), viewed as
    [batch, heads, L, L], masked with a [batch, 1, L, L] padding mask."""

    def forward(self, q, k, mask):
        scores = torch.bmm(q, k.transpose(1, 2)).view(2, 4, 8, 8)
        return scores.masked_fill(~mask, torch.finfo(torch.float32).min)


def test_gemm_epilogue_reads_a_broadcast_mask_through_a_batch_split():
    """The GEMM epilogue's row index, (batch * M + row), was divided without parentheses
    (`b * 8 + ei / 32`): the mask was read at the wrong place, outside its buffer, and the
    scores came out wrong by a different amount in every process (DeBERTa-v2, 1e-2)."""
    gen = torch.Generator().manual_seed(15)

    def inputs():
        return (torch.randn(8, 8, 8, generator=gen), torch.randn(8, 8, 8, generator=gen),
                torch.rand(2, 1, 8, 8, generator=gen) > 0.3)
    cm = compiled(MaskedScores(), *inputs())
    for _ in range(2):
        x = inputs()
        torch.testing.assert_close(cm(*x), MaskedScores()(*x), rtol=1e-5, atol=1e-5)
