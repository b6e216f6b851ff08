"""Llama examples for codesign (random weights built from a LlamaConfig; no downloads)."""
import torch
from hf_causal_lm import LogitsOnly
from transformers import LlamaConfig, LlamaForCausalLM


def tiny(attn_implementation="sdpa"):
    """LlamaForCausalLM: 2 layers, hidden 64, 4 heads, 2 KV heads (GQA), intermediate 128, vocab 256,
    max_position_embeddings 128; input_ids (2, 16) int64."""
    torch.manual_seed(0)
    config = LlamaConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=128, vocab_size=256, max_position_embeddings=128, use_cache=False,
                         attn_implementation=attn_implementation)
    model = LogitsOnly(LlamaForCausalLM(config)).eval()
    input_ids = torch.randint(0, config.vocab_size, (2, 16), dtype=torch.int64)
    return model, (input_ids,)


def llama2_7b_config():
    """Llama-2-7B hyper-parameters."""
    return LlamaConfig(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                       intermediate_size=11008, vocab_size=32000, max_position_embeddings=4096,
                       rms_norm_eps=1e-5, tie_word_embeddings=False, use_cache=False, attn_implementation="sdpa")


def llama2_7b_meta():
    """Llama-2-7B (6.74B params) built on the meta device (no memory); input_ids (1, 128) int64 on meta."""
    torch.manual_seed(0)
    config = llama2_7b_config()
    with torch.device("meta"):
        model = LogitsOnly(LlamaForCausalLM(config)).eval()
        input_ids = torch.zeros(1, 128, dtype=torch.int64)
    return model, (input_ids,)


if __name__ == "__main__":
    m, inp = tiny()
    with torch.no_grad():
        print(tuple(m(*inp).shape))
    m7, inp7 = llama2_7b_meta()
    print("7B params: %.3fB" % (sum(p.numel() for p in m7.parameters()) / 1e9))
