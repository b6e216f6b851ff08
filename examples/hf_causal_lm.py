"""Shared by the Hugging Face examples: a causal LM whose forward returns only the logits."""
from torch import nn


class LogitsOnly(nn.Module):
    """Wraps a HF causal LM so that forward(input_ids) -> logits (one tensor for torch.export)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return self.model(input_ids=input_ids, use_cache=False).logits
