"""Real architectures from transformers, diffusers (and torchvision / timm where they load),
built from small configs with random weights, compiled for cpu-host and run through the
generated C++, compared with eager on fresh random inputs.

A `Zoo` entry builds one model in eval mode and says how to draw its inputs; `run_model`
compiles it with `codesign.compile(model, inputs, target="cpu-host", backend="cpp")` (the
backend pinned, so a code-generation failure is reported instead of falling back to the
interpreter), calls the compiled module on new inputs and compares with eager.

Outcomes:

- `match`: same dtype and shape as eager, max |out - eager| / max |eager| <= `RTOL`.
- `refused`: one of codesign's own errors (`REFUSALS`) with a message: a clear refusal.
- `MISMATCH`: a result that differs from eager.
- `CRASH`: any other exception (a traceback from deep inside).
- `skipped`: the model's library does not import here.
- `DEGENERATE`: eager's output is constant, so the entry tests nothing (a zoo bug).

`tests/test_real_models.py` runs a fast subset by default and the whole zoo under the
marker `real_models_full`; `benchmarks/real_models.py` runs the zoo and writes the JSON.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import time
import traceback
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

import codesign
from codesign.codegen import CodegenError
from codesign.frontend.aten import ConversionError
from codesign.frontend.capture import CaptureError
from codesign.frontend.signature import InputMismatchError

REFUSALS = (CaptureError, ConversionError, CodegenError, InputMismatchError)
"""codesign's own "cannot do this" errors; anything else raised is a crash."""

RTOL = 1e-4
"""Max error relative to the output's largest magnitude: fp32 with another summation order
(blocked GEMM, fused reductions) differs from eager by ~1e-6 at these sizes."""

MATCH, REFUSED, MISMATCH, CRASH, SKIPPED = "match", "refused", "MISMATCH", "CRASH", "skipped"
DEGENERATE = "DEGENERATE"
"""Eager's output is constant: a comparison with it would prove nothing (fix the zoo entry)."""

InputMaker = Callable[[torch.Generator], tuple[torch.Tensor, ...]]


# -- helpers for the builders ------------------------------------------------------------------
class Select(nn.Module):
    """forward(*inputs) -> one tensor of the wrapped model's output (torch.export wants tensors)."""

    def __init__(self, model: nn.Module, field: str = "last_hidden_state", names: tuple[str, ...] = ("input_ids",),
                 method: str = "forward", **fixed):
        super().__init__()
        self.model, self.field, self.names, self.method, self.fixed = model, field, names, method, fixed

    def forward(self, *inputs):
        out = getattr(self.model, self.method)(**dict(zip(self.names, inputs)), **self.fixed)
        return getattr(out, self.field) if self.field else out


def ids(*shape: int, vocab: int = 96) -> InputMaker:
    return lambda gen: (torch.randint(0, vocab, shape, generator=gen),)


def image(*shape: int) -> InputMaker:
    return lambda gen: (torch.randn(shape, generator=gen),)


def ids_and_mask(batch: int, seq: int, vocab: int = 96) -> InputMaker:
    """Token ids and an attention mask with padding at the end of the second row."""
    def make(gen):
        mask = torch.ones(batch, seq, dtype=torch.int64)
        mask[-1, seq - 1 - int(torch.randint(0, seq // 2, (), generator=gen)):] = 0
        return torch.randint(0, vocab, (batch, seq), generator=gen), mask
    return make


def _transformers():
    return importlib.import_module("transformers")


def _class(name: str) -> type:
    """A transformers class by its top-level name, or by its module path when not exported."""
    module, _, attr = name.rpartition(".")
    return getattr(importlib.import_module(module or "transformers"), attr)


def _seeded(build: Callable[[], nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    model = build().eval()
    _lively_norms(model)
    return model


@torch.no_grad()
def _lively_norms(model: nn.Module) -> None:
    """Batch norms with running statistics and affine parameters away from their initial
    0 / 1: at init an eval-mode batch norm is (nearly) the identity, which hides a wrong
    fold of its statistics, and a stack of them can shrink a network's output to 0."""
    for module in model.modules():
        mean, var = getattr(module, "running_mean", None), getattr(module, "running_var", None)
        if not isinstance(mean, torch.Tensor) or not isinstance(var, torch.Tensor):
            continue
        mean.normal_(0.0, 0.2)
        var.uniform_(0.5, 1.5)
        if isinstance(getattr(module, "weight", None), torch.Tensor):
            module.weight.uniform_(0.5, 1.5)
        if isinstance(getattr(module, "bias", None), torch.Tensor):
            module.bias.normal_(0.0, 0.2)


TOKENS = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)
"""Special tokens inside the small vocabularies (the configs' defaults index a 50k one)."""

TEXT = dict(vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=64, **TOKENS)
"""A small text model's shape: every builder below starts from it."""

DECODER = dict(TEXT, num_key_value_heads=2, use_cache=False)


def causal_lm(config_cls: str, names: tuple[str, ...] = ("input_ids",), **kw) -> Callable[[], nn.Module]:
    def build():
        t = _transformers()
        config = getattr(t, config_cls)(**{**TOKENS, **kw})
        return Select(t.AutoModelForCausalLM.from_config(config), "logits", names, use_cache=False)
    return build


def encoder(model_cls: str, config_cls: str, field: str = "last_hidden_state",
            names: tuple[str, ...] = ("input_ids",), **kw) -> Callable[[], nn.Module]:
    def build():
        t = _transformers()
        return Select(_class(model_cls)(getattr(t, config_cls)(**kw)), field, names)
    return build


# -- the zoo -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    name: str
    library: str
    config: str
    """A short description of the config, for the results table."""
    build: Callable[[], nn.Module]
    inputs: InputMaker


def _t(name, config, build, inputs) -> Entry:
    return Entry(name, "transformers", config, build, inputs)


def _bert_like(cls: str, cfg: str, **kw) -> Callable[[], nn.Module]:
    return encoder(cls, cfg, names=("input_ids", "attention_mask"), **{**TEXT, **kw})


SMALL = "hidden 32, 2 layers, 4 heads, vocab 96"

ZOO: tuple[Entry, ...] = (
    # encoders (token ids + a padding mask)
    _t("bert", SMALL, _bert_like("BertModel", "BertConfig"), ids_and_mask(2, 8)),
    _t("roberta", SMALL, _bert_like("RobertaModel", "RobertaConfig", pad_token_id=1, bos_token_id=0), ids_and_mask(2, 8)),
    _t("distilbert", SMALL, encoder("DistilBertModel", "DistilBertConfig", names=("input_ids", "attention_mask"),
                                    vocab_size=96, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                    max_position_embeddings=64), ids_and_mask(2, 8)),
    _t("albert", SMALL + ", embedding 16", _bert_like("AlbertModel", "AlbertConfig", embedding_size=16),
       ids_and_mask(2, 8)),
    _t("electra", SMALL + ", embedding 16", _bert_like("ElectraModel", "ElectraConfig", embedding_size=16),
       ids_and_mask(2, 8)),
    _t("deberta-v2", SMALL + ", relative attention", _bert_like(
        "DebertaV2Model", "DebertaV2Config", relative_attention=True, position_buckets=8, max_relative_positions=16,
        pos_att_type=["p2c", "c2p"]), ids_and_mask(2, 8)),
    # decoders (causal LM logits)
    _t("gpt2", "n_embd 32, 2 layers, 4 heads", causal_lm("GPT2Config", vocab_size=96, n_embd=32, n_layer=2, n_head=4,
                                                        n_positions=64, **TOKENS), ids(2, 8)),
    _t("gpt-neo", SMALL + ", global+local attention", causal_lm(
        "GPTNeoConfig", vocab_size=96, hidden_size=32, num_layers=2, num_heads=4, max_position_embeddings=64,
        attention_types=[[["global", "local"], 1]], window_size=4), ids(2, 8)),
    _t("gpt-j", "n_embd 32, 2 layers, 4 heads, rotary 4", causal_lm(
        "GPTJConfig", vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_positions=64, rotary_dim=4), ids(2, 8)),
    _t("opt", SMALL, causal_lm("OPTConfig", vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                               ffn_dim=64, max_position_embeddings=64, word_embed_proj_dim=32), ids(2, 8)),
    _t("bloom", "hidden 32, 2 layers, 4 heads (ALiBi)", causal_lm("BloomConfig", vocab_size=96, hidden_size=32, n_layer=2,
                                                                   n_head=4), ids(2, 8)),
    _t("llama", SMALL + ", GQA 2 kv heads", causal_lm("LlamaConfig", **DECODER), ids(2, 8)),
    _t("llama-padded", SMALL + ", GQA, attention mask with padding", causal_lm(
        "LlamaConfig", **DECODER, names=("input_ids", "attention_mask")), ids_and_mask(2, 8)),
    _t("gpt2-padded", "n_embd 32, 2 layers, 4 heads, attention mask with padding", causal_lm(
        "GPT2Config", vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_positions=64,
        names=("input_ids", "attention_mask")), ids_and_mask(2, 8)),
    _t("mistral", SMALL + ", GQA, sliding window 4", causal_lm("MistralConfig", **DECODER, sliding_window=4), ids(2, 8)),
    _t("mixtral", SMALL + ", 4 experts top-2", causal_lm("MixtralConfig", **DECODER, num_local_experts=4,
                                                          num_experts_per_tok=2), ids(2, 8)),
    _t("qwen2", SMALL + ", GQA", causal_lm("Qwen2Config", **DECODER), ids(2, 8)),
    _t("qwen2-moe", SMALL + ", 4 experts top-2 + shared expert", causal_lm(
        "Qwen2MoeConfig", **DECODER, moe_intermediate_size=16, shared_expert_intermediate_size=48, num_experts=4,
        num_experts_per_tok=2), ids(2, 8)),
    _t("phi", SMALL + ", partial rotary", causal_lm("PhiConfig", **DECODER), ids(2, 8)),
    _t("phi3", SMALL + ", GQA", causal_lm("Phi3Config", **DECODER), ids(2, 8)),
    _t("gemma", SMALL + ", head_dim 8", causal_lm("GemmaConfig", **DECODER, head_dim=8), ids(2, 8)),
    _t("gemma2", SMALL + ", head_dim 8, softcapping, sliding window 4", causal_lm(
        "Gemma2Config", **DECODER, head_dim=8, sliding_window=4), ids(2, 8)),
    _t("falcon", SMALL + ", multi-query", causal_lm("FalconConfig", vocab_size=96, hidden_size=32, num_hidden_layers=2,
                                                    num_attention_heads=4, use_cache=False), ids(2, 8)),
    # encoder-decoders
    _t("t5-encoder", "d_model 32, 2 layers, 4 heads, relative buckets 8", encoder(
        "T5EncoderModel", "T5Config", vocab_size=96, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8), ids(2, 8)),
    _t("t5", "d_model 32, 2+2 layers, 4 heads", encoder(
        "T5Model", "T5Config", names=("input_ids", "decoder_input_ids"), vocab_size=96, d_model=32, d_kv=8, d_ff=64,
        num_layers=2, num_heads=4, relative_attention_num_buckets=8, use_cache=False),
       lambda gen: (torch.randint(0, 96, (2, 8), generator=gen), torch.randint(0, 96, (2, 5), generator=gen))),
    _t("bart", "d_model 32, 2+2 layers, 4 heads", encoder(
        "BartModel", "BartConfig", names=("input_ids", "decoder_input_ids"), vocab_size=96, d_model=32,
        encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
        decoder_ffn_dim=64, max_position_embeddings=64, use_cache=False),
       lambda gen: (torch.randint(3, 96, (2, 8), generator=gen), torch.randint(3, 96, (2, 5), generator=gen))),
    _t("whisper-encoder", "d_model 32, 2 layers, 16 mel bins, 32 frames", encoder(
        "transformers.models.whisper.modeling_whisper.WhisperEncoder", "WhisperConfig", names=("input_features",), vocab_size=96, d_model=32,
        encoder_layers=2, decoder_layers=1, encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
        decoder_ffn_dim=64, num_mel_bins=16, max_source_positions=16, decoder_start_token_id=1, **TOKENS), image(1, 16, 32)),
    _t("clip-text", SMALL, encoder("CLIPTextModel", "CLIPTextConfig", **TEXT), ids(2, 8)),
    # vision
    _t("vit", "32x32 image, patch 8, hidden 32, 2 layers", encoder(
        "ViTModel", "ViTConfig", names=("pixel_values",), image_size=32, patch_size=8, hidden_size=32,
        num_hidden_layers=2, num_attention_heads=4, intermediate_size=64), image(1, 3, 32, 32)),
    _t("deit", "32x32 image, patch 8, hidden 32, 2 layers", encoder(
        "DeiTModel", "DeiTConfig", names=("pixel_values",), image_size=32, patch_size=8, hidden_size=32,
        num_hidden_layers=2, num_attention_heads=4, intermediate_size=64), image(1, 3, 32, 32)),
    _t("clip-vision", "32x32 image, patch 8, hidden 32, 2 layers", encoder(
        "CLIPVisionModel", "CLIPVisionConfig", names=("pixel_values",), image_size=32, patch_size=8, hidden_size=32,
        num_hidden_layers=2, num_attention_heads=4, intermediate_size=64), image(1, 3, 32, 32)),
    _t("swin", "32x32 image, patch 2, embed 16, depths (1, 1), window 4", encoder(
        "SwinModel", "SwinConfig", names=("pixel_values",), image_size=32, patch_size=2, embed_dim=16, depths=[1, 1],
        num_heads=[2, 2], window_size=4), image(1, 3, 32, 32)),
    _t("convnext", "32x32 image, sizes (8, 16), depths (1, 1)", encoder(
        "ConvNextModel", "ConvNextConfig", names=("pixel_values",), num_stages=2, hidden_sizes=[8, 16],
        depths=[1, 1]), image(1, 3, 32, 32)),
    _t("resnet", "32x32 image, basic blocks, sizes (8, 16)", encoder(
        "ResNetModel", "ResNetConfig", names=("pixel_values",), embedding_size=8, hidden_sizes=[8, 16],
        depths=[1, 1], layer_type="basic"), image(1, 3, 32, 32)),
    _t("mobilenet-v2", "32x32 image, depth multiplier 0.35", encoder(
        "MobileNetV2Model", "MobileNetV2Config", names=("pixel_values",), image_size=32, depth_multiplier=0.35),
       image(1, 3, 32, 32)),
    _t("efficientnet", "32x32 image, width 0.1, depth 0.1", encoder(
        "EfficientNetModel", "EfficientNetConfig", names=("pixel_values",), image_size=32, width_coefficient=0.1,
        depth_coefficient=0.1, hidden_dim=128), image(1, 3, 32, 32)),
    _t("segformer", "32x32 image, sizes (8, 16, 24, 32), depths 1", encoder(
        "SegformerForSemanticSegmentation", "SegformerConfig", field="logits", names=("pixel_values",),
        hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 2, 2], decoder_hidden_size=32,
        num_labels=4), image(1, 3, 32, 32)),
)


# -- diffusers -----------------------------------------------------------------------------------
def _diffusers():
    return importlib.import_module("diffusers")


class VaeDecode(nn.Module):
    """forward(z) -> vae.decode(z).sample: post_quant_conv + decoder."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, z):
        return self.vae.decode(z).sample


class UNetSample(nn.Module):
    """forward(sample, timestep) -> unet(sample, timestep).sample."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep):
        return self.unet(sample, timestep).sample


def _vae_decoder() -> nn.Module:
    vae = _diffusers().AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(16, 32), layers_per_block=1, latent_channels=4,
        norm_num_groups=8, sample_size=16)
    return VaeDecode(vae)


def _unet2d() -> nn.Module:
    unet = _diffusers().UNet2DModel(
        sample_size=16, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(16, 32),
        norm_num_groups=8, attention_head_dim=8, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"))
    return UNetSample(unet)


class UNetConditionSample(nn.Module):
    """forward(sample, timestep, encoder_hidden_states) -> unet(...).sample."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states).sample


def _unet2d_condition() -> nn.Module:
    unet = _diffusers().UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        norm_num_groups=8, cross_attention_dim=24, attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    return UNetConditionSample(unet)


def _conditioned(gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    return (torch.randn(1, 4, 8, 8, generator=gen), torch.randint(0, 1000, (1,), generator=gen),
            torch.randn(1, 6, 24, generator=gen))


def _timesteps(gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    return torch.randn(1, 3, 16, 16, generator=gen), torch.randint(0, 1000, (1,), generator=gen)


# -- torchvision and timm (only where their builds load with this torch) -------------------------
def _torchvision():
    return importlib.import_module("torchvision")


def _timm():
    return importlib.import_module("timm")


ZOO += (
    Entry("sd-vae-decoder", "diffusers", "AutoencoderKL decoder, channels (16, 32), latent 4x8x8", _vae_decoder,
          image(1, 4, 8, 8)),
    Entry("unet2d", "diffusers", "UNet2DModel 16x16, channels (16, 32), attention in the second level", _unet2d,
          _timesteps),
    Entry("unet2d-condition", "diffusers", "UNet2DConditionModel 8x8, channels (16, 32), cross-attention 24, 6 tokens",
          _unet2d_condition, _conditioned),
    Entry("tv-resnet18", "torchvision", "resnet18, 10 classes, 32x32 image",
          lambda: _torchvision().models.resnet18(num_classes=10), image(1, 3, 32, 32)),
    Entry("tv-mobilenet-v2", "torchvision", "mobilenet_v2 width 0.25, 10 classes, 32x32 image",
          lambda: _torchvision().models.mobilenet_v2(width_mult=0.25, num_classes=10), image(1, 3, 32, 32)),
    Entry("tv-shufflenet-v2", "torchvision", "shufflenet_v2_x0_5 (channel shuffle), 10 classes, 32x32 image",
          lambda: _torchvision().models.shufflenet_v2_x0_5(num_classes=10), image(1, 3, 32, 32)),
    Entry("tv-squeezenet", "torchvision", "squeezenet1_1 (ceil-mode pools, fire concats), 10 classes, 64x64 image",
          lambda: _torchvision().models.squeezenet1_1(num_classes=10), image(1, 3, 64, 64)),
    Entry("tv-efficientnet-b0", "torchvision", "efficientnet_b0 (SiLU, squeeze-excite), 10 classes, 32x32 image",
          lambda: _torchvision().models.efficientnet_b0(num_classes=10), image(1, 3, 32, 32)),
    Entry("timm-mobilenetv3", "timm", "mobilenetv3_small_050 (hard-swish, hard-sigmoid), 10 classes, 32x32 image",
          lambda: _timm().create_model("mobilenetv3_small_050", pretrained=False, num_classes=10),
          image(1, 3, 32, 32)),
    Entry("timm-vit", "timm", "vit_tiny_patch16_224 at 32x32, patch 8, depth 2",
          lambda: _timm().create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2,
                                       num_classes=10), image(1, 3, 32, 32)),
    Entry("timm-convnext", "timm", "convnext_atto, 10 classes, 32x32 image",
          lambda: _timm().create_model("convnext_atto", pretrained=False, num_classes=10), image(1, 3, 32, 32)),
)

BY_NAME = {e.name: e for e in ZOO}


# -- one model -----------------------------------------------------------------------------------
@dataclass
class Result:
    model: str
    library: str
    config: str
    status: str
    error: str = ""
    max_rel_err: float | None = None
    compile_s: float | None = None

    def line(self) -> str:
        err = f"  max rel err {self.max_rel_err:.1e}" if self.max_rel_err is not None else ""
        secs = f"  compile {self.compile_s:.1f} s" if self.compile_s is not None else ""
        why = f"  {self.error}" if self.error else ""
        return f"{self.status:8} {self.model:16}{err}{secs}{why}"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else ""
    if isinstance(exc, CaptureError) and len(text) > 1 and "unsupported ATen op" in line:
        line = line + " " + text[1].strip()
    return line if len(line) <= 400 else line[:397] + "..."


def crash_site(exc: BaseException) -> str:
    """The innermost codesign frame of a traceback (where the crash happened)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/codesign/" in f.filename]
    if not frames:
        return ""
    f = frames[-1]
    return f" @ {f.filename.split('/codesign/', 1)[1]}:{f.lineno}"


def max_rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    """max |got - ref| / max |ref| in float64 (0 when both are all zero)."""
    got, ref = got.double(), ref.double()
    scale = ref.abs().max().item() if ref.numel() else 0.0
    diff = (got - ref).abs().max().item() if ref.numel() else 0.0
    return diff / scale if scale > 0 else diff


def build(entry: Entry) -> nn.Module:
    """The entry's model, seeded, in eval mode."""
    return _seeded(entry.build)


@functools.lru_cache(maxsize=None)
def library_error(library: str) -> str:
    """Why `library` does not import here ("" when it does)."""
    try:
        importlib.import_module(library)
    except Exception as exc:  # noqa: BLE001 - a broken install (a torchvision built for another torch) is not ours
        return f"{library} does not import: {type(exc).__name__}: {first_line(exc)}"
    return ""


def run_model(entry: Entry, seeds: tuple[int, ...] = (1, 2)) -> Result:
    """Compile `entry` for cpu-host (C++), run it on fresh inputs for each seed, compare with eager."""
    result = Result(entry.name, entry.library, entry.config, SKIPPED)
    why = library_error(entry.library)
    if why:
        result.error = why
        return result
    model = build(entry)
    example = entry.inputs(torch.Generator().manual_seed(0))
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            cm = codesign.compile(model, example, target="cpu-host", backend="cpp")
            cm(*example)  # the first call generates and builds the C++
            result.compile_s = round(time.perf_counter() - start, 2)
            worst = 0.0
            for seed in seeds:
                inputs = entry.inputs(torch.Generator().manual_seed(seed))
                with torch.no_grad():
                    ref = model(*inputs)
                got = cm(*inputs)
                if not isinstance(got, torch.Tensor) or got.dtype != ref.dtype or got.shape != ref.shape:
                    result.status = MISMATCH
                    result.error = f"got {_describe(got)}, eager {_describe(ref)}"
                    return result
                if ref.numel() < 2 or not ref.double().std() > 0:
                    result.status, result.error = DEGENERATE, f"eager's output is constant ({_describe(ref)})"
                    return result
                worst = max(worst, max_rel_err(got, ref))
    except REFUSALS as exc:
        result.status, result.error = REFUSED, f"{type(exc).__name__}: {first_line(exc)}"
        return result
    except Exception as exc:  # noqa: BLE001 - classified: a traceback from deep inside
        result.status, result.error = CRASH, f"{type(exc).__name__}: {first_line(exc)}{crash_site(exc)}"
        return result
    result.max_rel_err = float(f"{worst:.3g}")
    result.status = MATCH if worst <= RTOL else MISMATCH
    return result


def _describe(v) -> str:
    if isinstance(v, torch.Tensor):
        return f"{str(v.dtype).removeprefix('torch.')}{list(v.shape)}"
    return type(v).__name__
