"""`torch.compile(model, backend="codesign")`: graph breaks, new shapes (Dynamo's dynamic
graphs recompiled per shape), live weights, eager fallbacks, option errors."""

from __future__ import annotations

import ast
import logging

import pytest
import torch

from codesign.dynamo import DynamoFallbackWarning, DynamoOptions, codesign_backend
from helpers import rel_err


class Broken(torch.nn.Module):
    """Two graphs: Dynamo breaks at `graph_break()`, the code between them runs eagerly."""

    def __init__(self) -> None:
        super().__init__()
        self.l1 = torch.nn.Linear(16, 32)
        self.l2 = torch.nn.Linear(32, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.gelu(self.l1(x))
        torch._dynamo.graph_break()
        return self.l2(h * 2).softmax(-1)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


class Records(logging.Handler):
    """The messages `codesign.dynamo` logs (one per graph compiled), without pytest's caplog."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def dynamo_log():
    logger, records = logging.getLogger("codesign.dynamo"), Records()
    level = logger.level
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
    yield records.messages
    logger.removeHandler(records)
    logger.setLevel(level)


def test_graph_break_and_new_shapes_run_through_codesign(dynamo_log):
    torch.manual_seed(0)
    model = Broken().eval()
    compiled = torch.compile(model, backend="codesign", options={"target": "cpu-host"})  # the entry point
    with torch.no_grad():
        for rows in (4, 6, 9):  # 6: Dynamo marks the dimension dynamic; 9: the same graph, recompiled by us
            x = torch.randn(rows, 16)
            assert rel_err(compiled(x), model(x)) <= 1e-5
        model.l2.weight.data.mul_(-3)  # parameters are graph inputs: read on every call
        x = torch.randn(6, 16)
        assert rel_err(compiled(x), model(x)) <= 1e-5
    compiles = dynamo_log
    shapes = sorted(sorted(ast.literal_eval(m.split(" for ", 1)[1])) for m in compiles)  # argument order aside
    # both graphs (before and after the break) compiled by codesign for each of the three shapes
    assert len(compiles) == 6 and len({m.split()[2] for m in compiles}) == 4, compiles
    assert shapes == sorted(sorted([[o, i], [o], [r, i]]) for r in (4, 6, 9) for o, i in ((32, 16), (8, 32)))


def test_a_graph_codesign_cannot_compile_runs_eagerly_with_a_warning():
    class Inv(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.linalg.inv(x) + 1

    compiled = torch.compile(Inv(), backend=codesign_backend, options={"target": "cpu-host"})
    x = torch.randn(4, 4) + 4 * torch.eye(4)
    with pytest.warns(DynamoFallbackWarning, match="codesign cannot compile this graph"):
        assert torch.allclose(compiled(x), torch.linalg.inv(x) + 1)


def test_a_call_that_autograd_records_runs_eagerly():
    model = Broken()
    compiled = torch.compile(model, backend=codesign_backend, options={"target": "cpu-host", "backend": "interpreter"})
    x = torch.randn(4, 16)
    with pytest.warns(DynamoFallbackWarning, match=r"autograd is recording.*torch.no_grad\(\)"):
        out = compiled(x)
    out.sum().backward()
    assert model.l1.weight.grad is not None and rel_err(out.detach(), model(x).detach()) <= 1e-6


def test_options_are_checked():
    with pytest.raises(ValueError, match=r"unknown option\(s\) 'taget' \(options: target, pipeline"):
        DynamoOptions.parse({"taget": "h200"})
    with pytest.raises(ValueError, match="fallback='never' is not one of eager, error"):
        DynamoOptions.parse({"fallback": "never"})
    assert DynamoOptions.parse({"target": "h200", "max_shapes": 2}) == DynamoOptions({"target": "h200"}, 2, "eager")
