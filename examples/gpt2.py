"""GPT-2 examples for codesign (random weights built from a GPT2Config; no downloads).

The wrapper returns only the logits tensor so torch.export sees a single tensor output.
"""
import torch
from hf_causal_lm import LogitsOnly
from transformers import GPT2Config, GPT2LMHeadModel


def _build(config, batch, seq):
    torch.manual_seed(0)
    model = LogitsOnly(GPT2LMHeadModel(config)).eval()
    input_ids = torch.randint(0, config.vocab_size, (batch, seq), dtype=torch.int64)
    return model, (input_ids,)


def tiny(attn_implementation="sdpa"):
    """GPT2LMHeadModel, 2 layers, n_embd 64, 4 heads, vocab 256, n_positions 64; input_ids (2, 16) int64.

    attn_implementation: "sdpa" (default) or "eager".
    """
    config = GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=256, n_positions=64,
                        bos_token_id=0, eos_token_id=0, use_cache=False, attn_implementation=attn_implementation)
    return _build(config, 2, 16)


def small(attn_implementation="sdpa"):
    """GPT-2 small (12 layers, n_embd 768, 12 heads, vocab 50257, n_positions 1024) for benchmarks; input_ids (1, 128)."""
    config = GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024,
                        use_cache=False, attn_implementation=attn_implementation)
    return _build(config, 1, 128)


if __name__ == "__main__":
    m, inp = tiny()
    with torch.no_grad():
        print(tuple(m(*inp).shape))
