"""A target's measured efficiency: the calibration file's schema.

A target file gives peaks from datasheets; silicon reaches a fraction of them that depends
on the work. A calibration says how much, as a few structural figures (see
`codesign.cost.model`, which prices with them): the fraction of the matrix peak each
template reaches on large, well-shaped work, per dtype and implementation; how a short
reduction dimension and wave quantisation cut it; the fraction of the vector peak and of
the home tier's bandwidth reached; the special-function rate; a fixed device time per
kernel; how compute and memory overlap; and the host's cost per launch.

Every calibration names where its figures come from (`source`: measured on a named device
by `codesign calibrate`, cited from a publication, or assumed), the software it was
measured with and when, so a report can label its numbers. Files are YAML, referenced from
a target (`calibration: h200.calibration.yaml`, relative to the target file) or given to
`compile(..., calibration=...)` / `--calibration`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

FORMAT_VERSION = 1


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


_Fraction = Field(gt=0.0, le=1.5)  # measured rates can exceed a conservative datasheet peak a little


class Efficiency(_Frozen):
    """The fitted figures. Each has a physical meaning; none is a per-model fudge factor."""

    matrix: dict[str, float] = Field(
        description="Fraction of the dtype's matrix peak reached on large, well-shaped work, "
        "by 'template/dtype' (gemm/bf16, attention/bf16, conv/fp32, ...) and, for a vendor "
        "library, 'template/dtype/vendor'.")
    tile_overhead: float = Field(default=0.0, ge=0.0, le=1e-3, description=(
        "Seconds each wave of a generated GEMM's (or attention's) output tiles spends outside "
        "its reduction loop: pipeline fill, the epilogue and the store."))
    vendor_k_half: float = Field(default=0.0, ge=0.0, le=1e6, description=(
        "Reduction length at which the vendor library reaches half its efficiency (K / (K + "
        "vendor_k_half)); it picks its tiles per shape (split-K for skinny shapes), so it is "
        "not wave-quantised."))
    tile: tuple[int, int] = Field(default=(128, 128), description=(
        "Output tile (rows, columns) per compute unit of a generated GEMM, for wave "
        "quantisation: its tiles fill the units in whole waves."))
    units: int | None = Field(default=None, ge=1, description=(
        "Compute units the measured programs ran on, when fewer than the target's (a CPU's "
        "threads): a generated GEMM's tiles fill these in waves. Rates stay fractions of the "
        "target's peaks. None: the target's units."))
    unit_bandwidth: float = Field(default=0.0, ge=0.0, description=(
        "Home-tier bytes per second one compute unit can pull (0: no limit): a generated "
        "GEMM with fewer tiles than units cannot reach the chip's bandwidth."))
    vector: float = Field(default=1.0, gt=0.0, le=1.5, description=(
        "Fraction of the vector (non-matrix) peak reached."))
    prologue: float = Field(default=1.0, gt=0.0, le=1.5, description=(
        "Fraction of the vector peak a fused prologue reaches inside a matrix template's "
        "loop, where it is evaluated again for every tile that reads it."))
    epilogue: float = Field(default=1.0, gt=0.0, le=1.5, description=(
        "Fraction of the vector peak reached by work fused after a matrix op (bias, residual, "
        "activation) in its kernel."))
    cache_capacity: float = Field(default=0.0, ge=0.0, description=(
        "Bytes below which a kernel's input or output stays in the on-chip cache between "
        "kernels (a GPU's L2), so it moves at `cached` times the home bandwidth; 0: none."))
    cached: float = Field(default=1.0, gt=0.0, le=8.0, description=(
        "Bandwidth of cache-resident operands, as a multiple of the home tier's."))
    im2col: float | None = Field(default=None, gt=0.0, le=1.5, description=(
        "Fraction of the home tier's bandwidth at which a generated conv builds its im2col "
        "columns before the GEMM on them (None: not priced)."))
    special_rate: float = Field(default=0.0, ge=0.0, description=(
        "Transcendental evaluations per second (0: not limiting)."))
    memory: dict[str, float] = Field(default_factory=lambda: {"vector": 1.0}, description=(
        "Fraction of the home tier's bandwidth reached, by kernel class: vector (pointwise), "
        "row (reductions, norms, softmax), gemm, attention; 'vector' is the default."))
    strided: float = Field(default=1.0, gt=0.0, le=1.5, description=(
        "Fraction of the home bandwidth reached by reads across the innermost loop (a transpose)."))
    fixed: dict[str, float] = Field(default_factory=dict, description=(
        "Fixed device time per kernel, by template ('vector', 'gemm', 'attention', ...; "
        "'vector' is the default), seconds."))
    overlap: float = Field(default=8.0, ge=1.0, le=64.0, description=(
        "How compute, memory and special-function time combine: (sum t_i^p)^(1/p); 1 adds "
        "them, large values take the largest."))
    host_per_launch: float = Field(default=0.0, ge=0.0, le=1.0, description=(
        "Host time to launch one kernel from the generated wrapper, seconds: a program of "
        "many small kernels is host-bound when this exceeds their device time."))
    host_per_argument: float = Field(default=0.0, ge=0.0, le=1.0, description=(
        "Extra host time per tensor argument of a launch, seconds."))
    host_per_call: float = Field(default=0.0, ge=0.0, le=1.0, description=(
        "Host time of one call of the compiled program outside its launches (input checks, "
        "the calling convention), seconds."))
    nchw_library_conv: float | None = Field(default=None, gt=0.0, le=8.0, description=(
        "How much longer the convolution library takes on a 2-D conv whose data is NCHW than "
        "on the same conv channels-last (fitted to convs timed in both layouts; None: not "
        "measured, both layouts priced alike)."))
    nchw_library_conv_fixed: float = Field(default=0.0, ge=0.0, le=1e-3, description=(
        "Time a library conv on NCHW data pays beside `nchw_library_conv`'s factor, seconds: "
        "the layout transforms the library runs around an NCHW conv, which a small conv pays "
        "whole (fitted with it)."))
    in_sequence: float | None = Field(default=None, ge=1.0, le=4.0, description=(
        "Where the host runs the kernels itself (a CPU): how much longer a program's kernels "
        "take back to back than the sum of their times each timed alone (caches and the "
        "thread team left by the kernel before, and the spread a per-kernel median leaves "
        "out), fitted to the suite's programs. None: 1."))
    asynchronous_launch: bool = Field(default=True, description=(
        "Whether the host launches kernels ahead of the device (a GPU stream: program time "
        "is the larger of device and host time) or runs them itself (a CPU: their sum)."))

    @field_validator("memory")
    @classmethod
    def _memory(cls, memory: dict[str, float]) -> dict[str, float]:
        for key, value in memory.items():
            if not 0.0 < value <= 1.5:
                raise ValueError(f"memory[{key!r}] = {value} must be in (0, 1.5]")
        return memory

    @field_validator("matrix")
    @classmethod
    def _keys(cls, matrix: dict[str, float]) -> dict[str, float]:
        for key, value in matrix.items():
            if len(key.split("/")) not in (2, 3):
                raise ValueError(f"matrix key {key!r} must be 'template/dtype' or 'template/dtype/vendor'")
            if not 0.0 < value <= 1.5:
                raise ValueError(f"matrix[{key!r}] = {value} must be in (0, 1.5]")
        return matrix


class FitQuality(_Frozen):
    """How well the figures reproduce the measurements they were fitted to."""

    kernels: int = Field(ge=0)
    median_abs_error: float = Field(ge=0.0)
    p90_abs_error: float = Field(ge=0.0)


class Calibration(_Frozen):
    """One target's calibration, with its provenance."""

    format: Literal[1] = Field(default=FORMAT_VERSION, description="File format version.")
    target: str = Field(description="The target this calibrates (its name).")
    source: Literal["measured", "cited", "assumed"] = Field(description=(
        "measured: by `codesign calibrate` on `device`; cited: from `citations`; assumed: "
        "neither (say why in `notes`)."))
    device: str = Field(default="", description="The card or CPU measured, as the driver names it.")
    date: str = Field(default="", description="When it was measured (ISO date).")
    software: dict[str, str] = Field(default_factory=dict, description=(
        "Versions that shaped the figures: driver, CUDA, torch, triton, compiler, BLAS."))
    threads: int | None = Field(default=None, ge=1, description="CPU threads used, when on a CPU.")
    citations: tuple[str, ...] = Field(default=(), description="Publications the figures come from.")
    notes: tuple[str, ...] = Field(default=())
    raw: str = Field(default="", description="The raw measurements' file, for `--from-data` refits.")
    efficiency: Efficiency
    fit: FitQuality | None = None
