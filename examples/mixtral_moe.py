"""Mixtral examples for codesign (random weights built from a MixtralConfig; no downloads).

transformers 5.x layout: MixtralSparseMoeBlock has `gate` (MixtralTopKRouter, weight [E, H]) and
`experts` (MixtralExperts with 3-D params gate_up_proj [E, 2I, H] and down_proj [E, H, I]).
Router forward (transformers 5.24):
    h = hidden_states.reshape(-1, H)
    router_logits = F.linear(h, self.weight)                     # (T, E)
    router_probs = softmax(router_logits.float(), dim=-1)
    top_value, top_index = torch.topk(router_probs, top_k, dim=-1)
    top_value /= top_value.sum(dim=-1, keepdim=True)
    return router_logits, top_value (scores), top_index          # 3-tuple
The "eager" experts forward loops over hit experts (one_hot / nonzero / torch.where / index_add_),
i.e. it is data dependent.
"""
import torch
from hf_causal_lm import LogitsOnly
from transformers import MixtralConfig, MixtralForCausalLM
from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock


def _config(experts_implementation="eager", **kw):
    cfg = dict(hidden_size=64, intermediate_size=128, num_local_experts=4, num_experts_per_tok=2,
               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=256,
               max_position_embeddings=128, use_cache=False, attn_implementation="sdpa")
    cfg.update(kw)
    config = MixtralConfig(**cfg)
    config._experts_implementation = experts_implementation
    return config


def tiny(experts_implementation="eager"):
    """A single MixtralSparseMoeBlock (hidden 64, intermediate 128, 4 experts, top-2); input (2, 8, 64).

    experts_implementation: "eager" (data-dependent loop), "batched_mm" or "grouped_mm".
    Weights are initialised with normal(0, 0.02) since the block's params are created with torch.empty.
    """
    torch.manual_seed(0)
    block = MixtralSparseMoeBlock(_config(experts_implementation))
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0.0, 0.02)
    block.eval()
    x = torch.randn(2, 8, 64)
    return block, (x,)


def tiny_model(experts_implementation="eager"):
    """MixtralForCausalLM, 2 layers, hidden 64, 4 heads / 2 KV heads, 4 experts top-2, vocab 256;
    returns logits; input_ids (2, 16) int64."""
    torch.manual_seed(0)
    model = MixtralForCausalLM(_config(experts_implementation))
    model.set_experts_implementation(experts_implementation)
    model = LogitsOnly(model).eval()
    input_ids = torch.randint(0, 256, (2, 16), dtype=torch.int64)
    return model, (input_ids,)


if __name__ == "__main__":
    m, inp = tiny()
    with torch.no_grad():
        print(tuple(m(*inp).shape))
    m, inp = tiny_model()
    with torch.no_grad():
        print(tuple(m(*inp).shape))
