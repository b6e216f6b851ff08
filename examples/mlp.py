"""Tiny MLP example for codesign: Linear -> GELU -> Linear -> ReLU -> Linear."""
import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, d_in=32, d_hidden=64, d_out=10):
        super().__init__()
        self.fc1 = nn.Linear(d_in, d_hidden)
        self.act1 = nn.GELU()
        self.fc2 = nn.Linear(d_hidden, d_hidden)
        self.act2 = nn.ReLU()
        self.fc3 = nn.Linear(d_hidden, d_out)

    def forward(self, x):
        return self.fc3(self.act2(self.fc2(self.act1(self.fc1(x)))))


def tiny():
    """3-layer MLP (32 -> 64 -> 64 -> 10, GELU and ReLU), fp32, eval; input x of shape (4, 32)."""
    torch.manual_seed(0)
    model = MLP().eval()
    x = torch.randn(4, 32)
    return model, (x,)


if __name__ == "__main__":
    m, inp = tiny()
    with torch.no_grad():
        print(tuple(m(*inp).shape))
