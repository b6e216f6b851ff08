"""Compiled modules read the model's weights and buffers live: every way of changing them
(in place, through `.data`, a new tensor behind a parameter, a new parameter object, an
optimizer step, `load_state_dict`) shows in the next call, on every backend."""

from __future__ import annotations

import pytest
import torch

import codesign
from codesign.frontend.state import LiveState, StateMismatchError
from helpers import rel_err


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l1 = torch.nn.Linear(32, 48)
        self.bn = torch.nn.BatchNorm1d(48)
        self.l2 = torch.nn.Linear(48, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l2(torch.relu(self.bn(self.l1(x))))


def _updates(model: Net):
    """(what, how) pairs that change the model's weights or buffers, each differently."""
    def optimizer_step() -> None:
        model.train(False)
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        loss = model(torch.randn(4, 32)).square().sum()
        loss.backward()
        opt.step()
        opt.zero_grad()

    def state_dict(assign: bool):
        def fresh(key: str, v: torch.Tensor) -> torch.Tensor:
            if not v.is_floating_point():
                return v
            return torch.rand_like(v) + 0.5 if key.endswith("running_var") else torch.randn_like(v)
        return lambda: model.load_state_dict({k: fresh(k, v) for k, v in model.state_dict().items()}, assign=assign)

    return [
        ("data.mul_", lambda: model.l1.weight.data.mul_(2)),
        ("data replaced", lambda: setattr(model.l1.weight, "data", torch.randn(48, 32))),
        ("buffer in place", lambda: model.bn.running_var.mul_(3)),
        ("optimizer step", optimizer_step),
        ("load_state_dict", state_dict(False)),
        ("load_state_dict assign", state_dict(True)),
        ("new parameter", lambda: setattr(model.l2, "bias", torch.nn.Parameter(torch.randn(8)))),
        ("new buffer", lambda: setattr(model.bn, "running_mean", torch.randn(48))),
    ]


@pytest.mark.parametrize("backend", ["cpp", "interpreter", "triton"])
def test_every_weight_update_shows_in_the_next_call(backend):
    torch.manual_seed(0)
    model = Net().eval()
    x = torch.randn(8, 32)
    cm = codesign.compile(model, (x,), target="cpu-host", backend=backend)
    assert isinstance(cm.state, LiveState) and set(cm.state.live) == set(model.state_dict())
    for what, update in _updates(model):
        update()
        fresh = torch.randn(8, 32)
        with torch.no_grad():
            want = model(fresh)
        assert rel_err(cm(fresh), want) <= 1e-5, what


def test_unchanged_weights_are_not_taken_again():
    """No copy and no rebind per call when nothing changed; one rebind after a change."""
    model = Net().eval()
    x = torch.randn(8, 32)
    cm = codesign.compile(model, (x,), target="cpu-host", backend="cpp")
    cm(x)
    program = cm.program("cpp")
    binds = []
    original = program.bind_state
    program.bind_state = lambda state: (binds.append(1), original(state))
    pointers = [program._pointers[i] for i in program._keep]
    for _ in range(3):
        cm(torch.randn(8, 32))
    assert binds == [] and [program._pointers[i] for i in program._keep] == pointers
    model.l1.weight.data = torch.randn(48, 32)
    cm(x)
    cm(x)
    assert binds == [1]


def test_a_weight_of_another_shape_or_dtype_is_refused():
    model = Net().eval()
    x = torch.randn(8, 32)
    cm = codesign.compile(model, (x,), target="cpu-host", backend="cpp")
    cm(x)
    model.l1.weight.data = torch.randn(48, 16)
    with pytest.raises(StateMismatchError, match=r"param 'l1.weight' is now float32 \[48, 16\].*f32 \[48, 32\]"):
        cm(x)
    model.l1.weight.data = torch.randn(48, 32, dtype=torch.float64)
    with pytest.raises(StateMismatchError, match="float64"):
        cm(x)


def test_a_non_contiguous_weight_is_taken_on_every_call():
    """A weight the C++ backend copies (not contiguous) is copied again each call, so even an
    update through `.data` (which bumps no version counter) shows."""
    model = Net().eval()
    x = torch.randn(8, 32)
    cm = codesign.compile(model, (x,), target="cpu-host", backend="cpp")
    model.l1.weight.data = torch.randn(32, 48).t()
    with torch.no_grad():
        assert rel_err(cm(x), model(x)) <= 1e-5
        model.l1.weight.data.mul_(-1)
        assert rel_err(cm(x), model(x)) <= 1e-5


def test_weights_loaded_in_inference_mode_are_read_too():
    """Inference tensors have no version counter: they are taken again on every call."""
    model = Net().eval()
    x = torch.randn(8, 32)
    cm = codesign.compile(model, (x,), target="cpu-host", backend="cpp")
    with torch.inference_mode():
        model.load_state_dict({k: v * 2 if v.is_floating_point() else v for k, v in model.state_dict().items()},
                              assign=True)
        want = model(x)
        assert rel_err(cm(x), want) <= 1e-5
        model.l1.weight.mul_(-1)  # in place, no version counter
        assert rel_err(cm(x), model(x)) <= 1e-5


def test_weights_a_pass_transformed_are_derived_again():
    """`subpixel-conv` rewrites upsample + conv with weights derived by graph ops from the
    conv's weight input, so updating the conv's weight shows in the next call too."""
    model = torch.nn.Sequential(torch.nn.Upsample(scale_factor=2, mode="nearest"),
                                torch.nn.Conv2d(4, 8, 3, padding=1)).eval()
    x = torch.randn(1, 4, 6, 6)
    cm = codesign.compile(model, (x,), target="h200", backend="cpp",
                          pipeline="canonicalize,subpixel-conv{when=always},dce,fuse")
    assert any(".subpixel" in n.name for n in cm.graph.nodes)  # the rewrite was made
    for update in (lambda: model[1].weight.data.mul_(-2), lambda: setattr(model[1].weight, "data",
                                                                           torch.randn(8, 4, 3, 3))):
        update()
        fresh = torch.randn(1, 4, 6, 6)
        with torch.no_grad():
            assert rel_err(cm(fresh), model(fresh)) <= 1e-5
