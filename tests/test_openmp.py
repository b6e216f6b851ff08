"""Generated C++ shares the process politely: its OpenMP runtime waits passively (unless the
user chose a policy) and runs torch's thread count. The timing side is a benchmark
(benchmarks/omp_sharing.py), not a test."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import codesign
from codesign.codegen.cpp import openmp

# Loads a generated library through codesign/codegen/cpp/openmp.py in a process without
# torch, so that the library's own libgomp starts there, and prints its settings.
PROBE = r"""
import ctypes, importlib.util, os, sys
spec = importlib.util.spec_from_file_location("openmp", sys.argv[1])
openmp = importlib.util.module_from_spec(spec)
spec.loader.exec_module(openmp)
lib = openmp.load(sys.argv[2])
assert "torch" not in sys.modules
lib.omp_display_env(1)  # to stderr
print("policy-left-in-environment:", os.environ.get("OMP_WAIT_POLICY"))
"""


@pytest.fixture(scope="module")
def cm():
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 32)).eval()
    return codesign.compile(model, (torch.randn(64, 64),), target="cpu-host", backend="cpp")


def _probe(library, **env) -> tuple[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in openmp.USER_SETTINGS}
    proc = subprocess.run([sys.executable, "-c", PROBE, openmp.__file__, str(library)], capture_output=True,
                          text=True, env={**base, **env}, check=True)
    spin = next(line for line in proc.stderr.splitlines() if "GOMP_SPINCOUNT" in line)
    return spin.split("=")[1].strip().strip("'"), proc.stdout.strip()


def test_the_generated_runtime_waits_passively_and_the_environment_is_restored(cm):
    cm(torch.randn(64, 64))
    library = cm.program("cpp").built.library
    spin, out = _probe(library)
    assert spin == "0"  # OMP_WAIT_POLICY=PASSIVE: workers sleep as soon as a region ends
    assert out == "policy-left-in-environment: None"


def test_a_policy_the_user_chose_is_kept(cm):
    cm(torch.randn(64, 64))
    spin, _ = _probe(cm.program("cpp").built.library, OMP_WAIT_POLICY="ACTIVE")
    assert int(spin) > 10**9  # active: spin (practically) for ever, as the user asked


def test_the_thread_count_is_torchs(cm):
    lib = cm.program("cpp")._lib
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        cm(torch.randn(64, 64))
        assert lib.omp_get_max_threads() == 1
    finally:
        torch.set_num_threads(before)
    cm(torch.randn(64, 64))
    assert lib.omp_get_max_threads() == before
    runtime = openmp.runtime_of(lib)
    assert runtime is not None and "gomp" in os.path.basename(runtime)
