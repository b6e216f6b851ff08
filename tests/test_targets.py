"""Targets: unit parsing, the bundled chips, error messages for broken files, the CLI."""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from codesign.targets import (
    MemoryTier,
    Target,
    TargetError,
    UnitError,
    list_targets,
    load_target,
    target_json_schema,
)
from codesign.targets.cli import add_targets_parser
from codesign.targets.loader import bundled_target_path, parse_target
from codesign.targets.schema import TargetLookupError
from codesign.targets.units import (
    format_bandwidth,
    format_bytes,
    format_flops,
    format_time,
    parse_bandwidth,
    parse_bytes,
    parse_flops,
    parse_frequency,
    parse_time,
)

KiB, MiB, GiB = 2**10, 2**20, 2**30

# ----------------------------------------------------------------------------- units


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("520 MiB", 520 * MiB),
        ("64 GB", 64 * 10**9),
        ("1.5 TB", 15 * 10**11),
        ("32 KiB", 32 * KiB),
        ("228 KiB", 228 * KiB),
        ("132 x 228 KiB", 132 * 228 * KiB),
        ("2 × 1 GiB", 2 * GiB),
        ("1.3 GB", 1_300_000_000),
        ("64KB", 64_000),
        ("64 kB", 64_000),
        ("4096", 4096),
        ("1_000 B", 1000),
        ("1.5e9", 1_500_000_000),
        (4096, 4096),
        (2.0e9, 2_000_000_000),
    ],
)
def test_parse_bytes(text: str | int | float, expected: int) -> None:
    assert parse_bytes(text) == expected
    assert isinstance(parse_bytes(text), int)


@pytest.mark.parametrize(
    ("parse", "text", "expected"),
    [
        (parse_bandwidth, "1.8 TB/s", 1.8e12),
        (parse_bandwidth, "200 GB/s", 200e9),
        (parse_bandwidth, "55 GB/s", 55e9),
        (parse_bandwidth, "100 TB/s", 100e12),
        (parse_bandwidth, "512 GiB/s", 512 * GiB),
        (parse_bandwidth, 3e12, 3e12),
        (parse_flops, "638 TFLOP/s", 638e12),
        (parse_flops, "989 TFLOPS", 989e12),
        (parse_flops, "50 GFLOP/s", 50e9),
        (parse_flops, "35 TOPS", 35e12),
        (parse_flops, "1 PFLOP/s", 1e15),
        (parse_time, "2 us", 2e-6),
        (parse_time, "2 µs", 2e-6),
        (parse_time, "5 ns", 5e-9),
        (parse_time, "1.5 ms", 1.5e-3),
        (parse_time, "3 s", 3.0),
        (parse_time, 0, 0.0),
        (parse_frequency, "1.98 GHz", 1.98e9),
        (parse_frequency, "800 MHz", 800e6),
    ],
)
def test_parse_rates_and_times(parse, text, expected) -> None:  # type: ignore[no-untyped-def]
    assert parse(text) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("parse", "text", "expected_words"),
    [
        (parse_bytes, "64 GX", "expected a size such as '64 GB' or '520 MiB'"),
        (parse_bytes, "1.8 TB/s", "expected a size"),
        (parse_bytes, "lots", "got 'lots'"),
        (parse_bytes, "", "expected a size"),
        (parse_bytes, True, "got True"),
        (parse_bytes, None, "got None"),
        (parse_bytes, float("nan"), "expected a size"),
        (parse_bytes, "1.1 KiB", "not a whole number of bytes"),
        (parse_bandwidth, "1.8 TB", "expected a bandwidth such as '1.8 TB/s'"),
        (parse_flops, "638 TB/s", "expected a compute rate"),
        (parse_flops, "1 KiFLOP/s", "unknown unit 'KiFLOP/s'"),
        (parse_time, "2 parsecs", "expected a duration such as '2 us'"),
        (parse_time, "2 MB", "expected a duration"),
    ],
)
def test_unit_errors_say_what_was_expected(  # type: ignore[no-untyped-def]
    parse, text, expected_words
) -> None:
    with pytest.raises(UnitError, match="expected|whole") as info:
        parse(text)
    assert expected_words in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (520 * MiB, "520 MiB"),
        (64 * 10**9, "64 GB"),
        (15 * 10**11, "1.5 TB"),
        (32 * KiB, "32 KiB"),
        (1000, "1 kB"),
        (0, "0 B"),
        (12_345_678, "12.346 MB"),
    ],
)
def test_format_bytes_reads_as_written(n: int, text: str) -> None:
    assert format_bytes(n) == text
    assert parse_bytes(format_bytes(n)) == n or "." in text


def test_format_rates_and_times() -> None:
    assert format_bandwidth(1.8e12) == "1.8 TB/s"
    assert format_bandwidth(55e9) == "55 GB/s"
    assert format_flops(638e12) == "638 TFLOP/s"
    assert format_flops(50e9) == "50 GFLOP/s"
    assert format_time(2e-6) == "2 us"
    assert format_time(1.5e-3) == "1.5 ms"
    assert format_time(5e-9) == "5 ns"
    assert format_time(3.0) == "3 s"
    assert format_time(0.0) == "0 s"


# ----------------------------------------------------------------------------- bundled


def test_bundled_targets_are_listed_sorted() -> None:
    names = list_targets()
    assert names == sorted(names)
    assert {"sn40l", "sn40l-node", "h100", "a100", "cpu-host", "mobile-a18"} <= set(names)


@pytest.mark.parametrize("name", list_targets())
def test_every_bundled_target_loads(name: str) -> None:
    target = load_target(name)
    assert isinstance(target, Target)
    assert target.name == name == bundled_target_path(name).stem
    assert len(target.memory) == 3  # on-chip / device / backing store, DESIGN.md
    assert target.peak_flops(next(iter(target.compute.peak))) > 0
    assert load_target(bundled_target_path(name)) == target  # by path, same target


@pytest.mark.parametrize("name", list_targets())
def test_every_bundled_figure_cites_a_source(name: str) -> None:
    """Every line that states a figure carries a comment saying where it came from."""
    figure_fields = ("bandwidth:", "capacity:", "units:", "launch_overhead:", "TFLOP", "TOPS")
    for line in bundled_target_path(name).read_text().splitlines():
        if any(field in line for field in figure_fields) and not line.lstrip().startswith("#"):
            assert "#" in line, f"{name}: figure without a source: {line.strip()}"


def test_sn40l_matches_design_reference_figures() -> None:
    sn40l = load_target("sn40l")
    assert sn40l.kind == "dataflow" and sn40l.host_backend == "cpp"
    assert sn40l.peak_flops("bf16") == 638e12
    assert sn40l.peak_flops("fp16") == 638e12  # falls back to bf16
    assert sn40l.compute.units == 1040
    assert sn40l.tier_names == ("sram", "hbm", "ddr")
    assert sn40l.tier("sram").capacity == 520 * MiB
    assert sn40l.tier("sram").bandwidth == 100e12
    assert sn40l.tier("sram").holds == ("weights", "activations")
    assert sn40l.tier("hbm").capacity == 64 * 10**9
    assert sn40l.tier("hbm").bandwidth == 1.8e12
    assert sn40l.tier("ddr").capacity == 15 * 10**11
    assert sn40l.tier("ddr").bandwidth == 200e9
    assert sn40l.launch_overhead == pytest.approx(2e-6)
    assert sn40l.sockets == 1
    assert sn40l.fast_tier.name == "sram" and sn40l.slow_tier.name == "ddr"
    assert [t.name for t in sn40l.tiers_holding("kv_cache")] == ["hbm", "ddr"]


def test_sn40l_node_totals() -> None:
    node = load_target("sn40l-node")
    assert node.sockets == 8
    assert node.total_capacity("ddr") == 8 * 15 * 10**11  # 12 TB
    assert node.total_capacity("sram") == 8 * 520 * MiB
    assert node.total_peak_flops("bf16") == 8 * 638e12
    assert node.interconnect is not None and node.interconnect.bandwidth == 1e12


def test_h100_matches_measured_figures() -> None:
    h100 = load_target("h100")
    assert h100.kind == "gpu" and h100.host_backend == "triton"
    assert h100.peak_flops("bf16") == 694e12  # measured, DESIGN.md
    assert h100.compute.units == 132
    assert h100.unit_capacity("smem") == 228 * KiB
    assert h100.tier("smem").capacity == 132 * 228 * KiB
    assert h100.tier("hbm").capacity == 80 * 10**9
    assert h100.tier("hbm").bandwidth == 3.0e12  # measured device copy, DESIGN.md
    assert h100.tier("host").bandwidth == 55e9  # measured pinned host->device
    assert h100.tier("host").scope == "host"
    # One Mixtral expert (352 MB) host->device in about 6.4 ms (DESIGN.md).
    assert 352e6 / h100.tier("host").bandwidth == pytest.approx(6.4e-3, rel=0.02)


def test_other_bundled_figures() -> None:
    a100 = load_target("a100")
    assert a100.unit_capacity("smem") == 164 * KiB and a100.compute.units == 108
    assert a100.tier("hbm").bandwidth == 2.039e12 and a100.peak_flops("bf16") == 312e12
    phone = load_target("mobile-a18")
    assert phone.kind == "mobile" and phone.peak_flops("int8") == 35e12
    assert phone.tier("lpddr").capacity == 8 * 10**9 and phone.tier("lpddr").bandwidth == 60e9
    assert load_target("cpu-host").kind == "cpu"


def test_lookups_fail_clearly() -> None:
    h100 = load_target("h100")
    with pytest.raises(TargetLookupError, match="no memory tier 'sram'.*smem, hbm, host"):
        h100.tier("sram")
    with pytest.raises(TargetLookupError, match="no peak rate for 'fp8'"):
        load_target("a100").peak_flops("fp8")


def test_target_is_frozen_and_hashable() -> None:
    sn40l = load_target("sn40l")
    with pytest.raises(Exception):
        sn40l.sockets = 2  # type: ignore[misc]
    assert hash(sn40l) == hash(load_target("sn40l"))


def test_targets_can_be_built_in_python_with_numbers_or_units() -> None:
    tier = MemoryTier(name="sram", capacity="1 MiB", bandwidth=1e12)
    assert tier.capacity == MiB and tier.holds == ("weights", "activations", "kv_cache", "experts")
    target = Target(
        name="toy",
        kind="cpu",
        host_backend="cpp",
        compute={"peak": {"fp32": "1 TFLOP/s"}, "units": 4},
        memory=[tier, {"name": "ddr", "capacity": "1 GB", "bandwidth": "10 GB/s"}],
    )
    assert target.launch_overhead == 0 and target.dma and target.sockets == 1


# ----------------------------------------------------------------------------- broken files

GOOD = """\
name: chip
kind: gpu
host_backend: triton
compute:
  peak: {bf16: 100 TFLOP/s}
  units: 10
memory:
  - {name: sram, capacity: 10 x 64 KiB, bandwidth: 10 TB/s, scope: per_unit}
  - {name: hbm, capacity: 16 GB, bandwidth: 1 TB/s}
sockets: 1
launch_overhead: 2 us
"""


def _write(tmp_path: Path, text: str, name: str = "chip.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _error(tmp_path: Path, text: str) -> str:
    path = _write(tmp_path, text)
    with pytest.raises(TargetError) as info:
        load_target(path)
    message = str(info.value)
    assert str(path) in message or path.name in message  # always names the file
    assert "Traceback" not in message and "pydantic" not in message
    return message


def test_the_good_file_is_good(tmp_path: Path) -> None:
    target = load_target(_write(tmp_path, GOOD))
    assert target.unit_capacity("sram") == 64 * KiB


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(
            "units: 10", "unitz: 10",
            ["line 6", "compute.unitz", "unknown field 'unitz'", "did you mean 'units'",
             "compute.units: required field is missing"],
            id="misspelled-field",
        ),
        pytest.param(
            "bandwidth: 1 TB/s", "bandwidth: 1 TX/s",
            ["line 9", "memory[1].bandwidth", "'1 TX/s'", "expected a bandwidth such as"],
            id="bad-unit",
        ),
        pytest.param(
            "capacity: 16 GB", "capacity: -16 GB",
            ["memory[1].capacity", "must be positive", "'-16 GB'"],
            id="negative-capacity",
        ),
        pytest.param(
            "bandwidth: 1 TB/s", "bandwidth: 100 TB/s",
            ["memory:", "fastest first", "'sram' (10 TB/s)", "'hbm' (100 TB/s)"],
            id="tiers-out-of-order",
        ),
        pytest.param(
            "name: hbm", "name: sram",
            ["memory:", "tier name 'sram' is used more than once"],
            id="duplicate-tier-names",
        ),
        pytest.param(
            "kind: gpu", "kind: gpgpu",
            ["line 2", "kind:", "'gpgpu'", "expected 'dataflow', 'gpu', 'cpu' or 'mobile'"],
            id="unknown-kind",
        ),
        pytest.param(
            "bf16: 100 TFLOP/s", "bf17: 100 TFLOP/s",
            ["line 5", "compute.peak.bf17", "unknown key 'bf17'", "'bf16', 'fp16'"],
            id="unknown-dtype",
        ),
        pytest.param(
            "sockets: 1", "sockets: eight",
            ["line 10", "sockets:", "expected a whole number", "'eight'"],
            id="wrong-type-sockets",
        ),
        pytest.param(
            "sockets: 1", "sockets: 0",
            ["sockets:", "expected a number greater than 0", "got 0"],
            id="zero-sockets",
        ),
        pytest.param(
            "kind: gpu\n", "",
            ["line 1", "kind: required field is missing"],
            id="missing-required-field",
        ),
        pytest.param(
            "peak: {bf16: 100 TFLOP/s}", "peak: {}",
            ["compute.peak", "at least one dtype"],
            id="empty-peak",
        ),
        pytest.param(
            "launch_overhead: 2 us", "launch_overhead: 2 parsecs",
            ["launch_overhead", "expected a duration such as '2 us'", "'2 parsecs'"],
            id="bad-time",
        ),
        pytest.param(
            "scope: per_unit", "scope: per_unit, holds: [weights, kvcache]",
            ["memory[0].holds[1]", "'kvcache'", "'kv_cache'"],
            id="unknown-holds",
        ),
        pytest.param(
            "10 x 64 KiB", "1001 B",
            ["does not split evenly over 10 compute units"],
            id="per-unit-not-divisible",
        ),
        pytest.param(
            "units: 10", "units: 10\n  units: 12",
            ["line 7", "compute.units", "given more than once"],
            id="duplicate-key",
        ),
    ],
)
def test_broken_targets_explain_themselves(
    tmp_path: Path, old: str, new: str, expected: list[str]
) -> None:
    assert old in GOOD
    message = _error(tmp_path, GOOD.replace(old, new, 1))
    for words in expected:
        assert words in message, f"{words!r} not in:\n{message}"


def test_empty_memory_list(tmp_path: Path) -> None:
    text = GOOD.split("memory:")[0] + "memory: []\n"
    assert "memory: memory needs at least one tier" in _error(tmp_path, text)


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    text = GOOD.replace("kind: gpu", "kind: gpgpu").replace("sockets: 1", "sockets: x")
    message = _error(tmp_path, text)
    assert "(2 problems)" in message and "kind:" in message and "sockets:" in message
    with pytest.raises(TargetError) as info:
        parse_target(text, source="inline")
    assert [p.path for p in info.value.problems] == ["kind", "sockets"]


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    message = _error(tmp_path, "name: chip\nkind: [gpu\nsockets: 1\n")
    assert "invalid YAML at line 3, column" in message


def test_top_level_list_is_refused(tmp_path: Path) -> None:
    message = _error(tmp_path, "- name: chip\n- kind: gpu\n")
    assert "top level is a list; expected a mapping" in message


def test_empty_file_is_refused(tmp_path: Path) -> None:
    assert "top level is empty" in _error(tmp_path, "# nothing\n")


def test_unknown_target_name_suggests_the_closest() -> None:
    with pytest.raises(TargetError) as info:
        load_target("h10")
    message = str(info.value)
    assert "unknown target 'h10'" in message and "did you mean 'h100'" in message
    assert "sn40l-node" in message  # lists the bundled ones


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(TargetError, match="target file not found: .*nope.yaml"):
        load_target(str(path))


# ----------------------------------------------------------------------------- schema


def test_json_schema_shows_units_as_string_or_number() -> None:
    schema = target_json_schema()
    json.dumps(schema)  # serialisable
    assert schema["title"] == "codesign target"
    assert schema["additionalProperties"] is False
    tier = schema["$defs"]["MemoryTier"]["properties"]
    assert [alt["type"] for alt in tier["capacity"]["anyOf"]] == ["string", "number"]
    assert [alt["type"] for alt in tier["bandwidth"]["anyOf"]] == ["string", "number"]
    assert set(schema["required"]) == {"name", "kind", "host_backend", "compute", "memory"}


# ----------------------------------------------------------------------------- CLI


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="codesign")
    add_targets_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["targets", "list"]) == 0
    out = capsys.readouterr().out
    for name in list_targets():
        assert name in out
    assert "638 TFLOP/s" in out and "520 MiB" in out


def test_cli_show(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["targets", "show", "h100"]) == 0
    out = capsys.readouterr().out
    for words in ("694 TFLOP/s", "228 KiB", "3 TB/s", "55 GB/s", "80 GB", "per_unit", "3 us"):
        assert words in out


def test_cli_show_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["targets", "show", "sn40"]) == 1
    assert "did you mean 'sn40l'" in capsys.readouterr().err


def test_cli_validate_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, GOOD)
    assert _run(["targets", "validate", str(path)]) == 0
    assert capsys.readouterr().out.strip() == f"ok: {path} is a valid target 'chip'"


def test_cli_validate_bad(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, GOOD.replace("1 TB/s", "1 TX/s"))
    assert _run(["targets", "validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert str(path) in err and "memory[1].bandwidth" in err and "'1 TX/s'" in err


def test_cli_schema_is_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["targets", "schema"]) == 0
    assert json.loads(capsys.readouterr().out) == target_json_schema()


# ----------------------------------------------------------------------------- capabilities


@pytest.mark.parametrize("name", list_targets())
def test_bundled_capabilities_keep_each_kinds_behaviour(name: str) -> None:
    """Capabilities replaced `kind` tests in the passes; every bundled file states them (with
    a comment) and they give what `kind` used to: dataflow chips stream layers, GPUs get
    power-of-two kernel tiles, the rest neither."""
    target = load_target(name)
    text = bundled_target_path(name).read_text()
    for field in ("tile_shape:", "streams_layers:"):
        (line,) = [ln for ln in text.splitlines() if ln.lstrip().startswith(field)]
        assert "#" in line, f"{name}: {field} without a comment"
    assert target.streams_layers == (target.kind == "dataflow")
    assert (target.compute.tile_shape == "power_of_two") == (target.kind == "gpu")
    assert target.home_tier == target.memory[1] and target.tier_rank(target.slow_tier.name) == 2


def test_capability_defaults_and_tier_roles_from_memory_order() -> None:
    target = Target(name="toy", kind="cpu", host_backend="cpp",
                    compute={"peak": {"fp32": "1 TFLOP/s"}, "units": 4},
                    memory=[{"name": "vmem", "capacity": "1 MiB", "bandwidth": "1 TB/s"}])
    assert not target.streams_layers and target.compute.tile_shape == "min_traffic"
    # a capability left out defaults from the kind (older target files keep their behaviour);
    # given explicitly, it wins over the kind
    common = dict(name="toy", host_backend="cpp", memory=[{"name": "vmem", "capacity": "1 MiB",
                                                            "bandwidth": "1 TB/s"}])
    dataflow = Target(kind="dataflow", compute={"peak": {"fp32": "1 TFLOP/s"}, "units": 4}, **common)
    gpu = Target(kind="gpu", compute={"peak": {"fp32": "1 TFLOP/s"}, "units": 4}, **common)
    assert dataflow.streams_layers and gpu.compute.tile_shape == "power_of_two"
    plain = Target(kind="dataflow", streams_layers=False,
                   compute={"peak": {"fp32": "1 TFLOP/s"}, "units": 4, "tile_shape": "min_traffic"}, **common)
    assert not plain.streams_layers
    assert target.fast_tier == target.home_tier == target.slow_tier and target.tier_rank("vmem") == 0
    with pytest.raises(TargetLookupError, match="no memory tier 'hbm'.*its tiers are vmem"):
        target.tier_rank("hbm")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param("sockets: 1", "sockets: 1\nstreams_layers: maybe",
                     ["line 11", "streams_layers:", "expected true or false", "'maybe'"], id="streams-not-bool"),
        pytest.param("sockets: 1", "sockets: 1\nstreams_layers: 1",
                     ["streams_layers:", "expected true or false", "got 1"], id="streams-number"),
        pytest.param("units: 10", "units: 10\n  tile_shape: square",
                     ["line 7", "compute.tile_shape", "'square'", "expected 'min_traffic' or 'power_of_two'"],
                     id="unknown-tile-shape"),
        pytest.param("units: 10", "units: 10\n  tile_shape: power_of_two\n  tile_multiple: 12",
                     ["compute:", "tile_shape power_of_two needs a power-of-two tile_multiple, got 12"],
                     id="power-of-two-misaligned"),
        pytest.param("sockets: 1", "sockets: 1\nstream_layers: true",
                     ["unknown field 'stream_layers'", "did you mean 'streams_layers'"], id="misspelled-capability"),
    ],
)
def test_bad_capabilities_explain_themselves(
    tmp_path: Path, old: str, new: str, expected: list[str]
) -> None:
    assert old in GOOD
    message = _error(tmp_path, GOOD.replace(old, new, 1))
    for words in expected:
        assert words in message, f"{words!r} not in:\n{message}"


# ----------------------------------------------------------------------------- hostile files


def _within_seconds(seconds: float, work: Any) -> Any:
    """Run ``work()`` in a daemon thread and return what it returned (or re-raise what it
    raised); fail the test if it is still running after ``seconds``, so a hang is a failure
    rather than a stuck test run (there is no pytest-timeout here)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"still running after {seconds} s (a hang)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _alias_bomb(levels: int = 9, width: int = 9) -> str:
    """'Billion laughs': each anchor is a list of `width` aliases of the previous one, so
    the last expands to width**levels leaves (9**9 ≈ 387 million) from about 1 KB of text."""
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_fast(tmp_path: Path) -> None:
    bomb = _alias_bomb() + GOOD.replace("name: chip", f"name: chip\ndescription: *a{8}")
    assert len(bomb.encode()) < 2000
    path = _write(tmp_path, bomb)
    started = time.perf_counter()
    with pytest.raises(TargetError) as info:
        _within_seconds(10, lambda: load_target(path))
    assert time.perf_counter() - started < 2
    message = str(info.value)
    assert str(path) in message and "Traceback" not in message
    assert "line 1, column 5" in message and "'&a0'" in message
    assert "anchors and aliases are not allowed" in message
    assert [p.line for p in info.value.problems] == [1]
    # and through the CLI, which used to run for minutes
    assert _within_seconds(10, lambda: _run(["targets", "validate", str(path)])) == 1


@pytest.mark.parametrize(
    ("text", "where", "token"),
    [
        pytest.param("x: &one 1\nname: chip\n", "line 1, column 4", "'&one'", id="unused-anchor"),
        pytest.param("name: *nothing\n", "line 1, column 7", "'*nothing'", id="undefined-alias"),
        pytest.param(GOOD.replace("units: 10", "units: &u 10\n  tile_multiple: *u"),
                     "line 6, column 10", "'&u'", id="small-alias"),
        pytest.param("base: &b {bandwidth: 1 TB/s}\nlink:\n  <<: *b\n", "line 1, column 7", "'&b'",
                     id="merge-key"),
    ],
)
def test_every_anchor_and_alias_is_refused(tmp_path: Path, text: str, where: str,
                                           token: str) -> None:
    """Target files need no aliases (each figure is written once, next to its source), so
    every anchor and alias is refused, not only those that expand a lot."""
    message = _within_seconds(10, lambda: _error(tmp_path, text))
    assert where in message and token in message and "not allowed" in message


def test_deep_nesting_and_huge_files_are_refused(tmp_path: Path) -> None:
    deep = "name: " + "[" * 5000 + "]" * 5000 + "\n"  # RecursionError in a plain composer
    message = _within_seconds(10, lambda: _error(tmp_path, deep))
    assert "line 1" in message and ("nested more than 16" in message  # ours, or libyaml's
                                    or "exceeded maximum nesting depth" in message)
    block = "".join(f"{'  ' * i}k{i}:\n" for i in range(20)) + "  " * 20 + "leaf\n"
    message = _within_seconds(10, lambda: _error(tmp_path, block))
    assert "line 17, column 33" in message and "nested more than 16" in message
    huge = GOOD + "# " + "x" * (1 << 20) + "\n"
    message = _within_seconds(10, lambda: _error(tmp_path, huge))
    assert "file is 1.0" in message and "at most 64 KiB" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("name: chip\nkind: 2001-13-45\n", ["line 2", "2001-13-45"], id="bad-date"),
        pytest.param("name: chip\nsockets: " + "9" * 5000 + "\n", ["line 2", "digits"],
                     id="int-too-long"),
        pytest.param("name: chip\nkind: !!timestamp x\n", ["line 2", "cannot read 'x'"],
                     id="bad-timestamp-tag"),  # an AttributeError inside PyYAML; found by the fuzz
        pytest.param("name: chip\x00\n", ["line 1", "#x0000", "not allowed"], id="nul-byte"),
    ],
)
def test_yaml_values_that_cannot_be_read_are_target_errors(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    message = _error(tmp_path, text)
    for words in expected:
        assert words in message, f"{words!r} not in:\n{message}"


# ----------------------------------------------------------------------------- magnitudes


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param("capacity: 16 GB", "capacity: 1e400",
                     ["line 9", "memory[1].capacity", "'1e400'", "from 1 B to 1 EB"], id="capacity-1e400"),
        pytest.param("capacity: 16 GB", "capacity: 1.0e+400",
                     ["memory[1].capacity", "inf", "finite"], id="capacity-inf-float"),
        pytest.param("capacity: 16 GB", "capacity: .inf",
                     ["memory[1].capacity", "inf", "finite"], id="capacity-yaml-inf"),
        pytest.param("capacity: 16 GB", "capacity: 2 EB",
                     ["memory[1].capacity", "'2 EB'", "from 1 B to 1 EB"], id="capacity-2EB"),
        pytest.param("capacity: 16 GB", "capacity: 1e999999999 GB",
                     ["memory[1].capacity", "'1e999999999 GB'", "out of range"], id="capacity-decimal-overflow"),
        pytest.param("capacity: 16 GB", "capacity: " + "1" * 30 + " x 1 GB",
                     ["memory[1].capacity", "from 1 B to 1 EB", "(out of range)"],
                     id="capacity-count-too-long"),
        pytest.param("capacity: 16 GB", "capacity: " + "9" * 5000 + " a b",  # was quadratic
                     ["memory[1].capacity", "longer than 100 characters"], id="capacity-long-text"),
        pytest.param("bandwidth: 1 TB/s", "bandwidth: .nan",
                     ["memory[1].bandwidth", "nan", "finite"], id="bandwidth-nan"),
        pytest.param("bandwidth: 10 TB/s", "bandwidth: 1e400 TB/s",
                     ["memory[0].bandwidth", "'1e400 TB/s'", "from 1 kB/s to 1 EB/s"], id="bandwidth-1e400"),
        pytest.param("bandwidth: 1 TB/s", "bandwidth: 1e-300",
                     ["memory[1].bandwidth", "'1e-300'", "from 1 kB/s to 1 EB/s"], id="bandwidth-tiny"),
        pytest.param("bandwidth: 1 TB/s", "bandwidth: 1 kB/s",
                     ["memory:", "at most 1e+09 times faster", "'sram' (10 TB/s)", "'hbm' (1 kB/s)"],
                     id="bandwidth-spread"),  # overflowed placement's CP-SAT coefficients
        pytest.param("sockets: 1", "sockets: 100000000000000000000000000",
                     ["line 10", "sockets:", "100000000000000000000000000", "from 1 to 65536"], id="sockets-1e26"),
        pytest.param("sockets: 1", "sockets: 1.0e+26",
                     ["sockets:", "from 1 to 65536"], id="sockets-1e26-float"),
        pytest.param("sockets: 1", "sockets: .inf",
                     ["sockets:", "finite"], id="sockets-inf"),
        pytest.param("bf16: 100 TFLOP/s", "bf16: 1e-300",
                     ["line 5", "compute.peak.bf16", "'1e-300'", "from 1 MFLOP/s to 1 EFLOP/s"], id="peak-1e-300"),
        pytest.param("bf16: 100 TFLOP/s", "bf16: 2 EFLOP/s",
                     ["compute.peak.bf16", "'2 EFLOP/s'", "from 1 MFLOP/s to 1 EFLOP/s"], id="peak-huge"),
        pytest.param("bf16: 100 TFLOP/s", "bf16: -1 TFLOP/s",
                     ["compute.peak.bf16", "must be positive", "'-1 TFLOP/s'"], id="peak-negative"),
        pytest.param("launch_overhead: 2 us", "launch_overhead: 1e300",
                     ["line 11", "launch_overhead", "'1e300'", "from 0 s to 1 s"], id="launch-1e300"),
        pytest.param("launch_overhead: 2 us", "launch_overhead: -1 us",
                     ["launch_overhead", "'-1 us'", "from 0 s to 1 s"], id="launch-negative"),
        pytest.param("bandwidth: 1 TB/s}", "bandwidth: 1 TB/s, latency: 1e300 s}",
                     ["memory[1].latency", "'1e300 s'", "from 0 s to 1 s"], id="latency-huge"),
        pytest.param("units: 10", "units: 100000000000000000000",
                     ["compute.units", "from 1 to 16777216"], id="units-huge"),
        pytest.param("units: 10", "units: " + "7" * 400,  # too big for a float: no OverflowError
                     ["compute.units", "from 1 to 16777216", "777"], id="units-400-digits"),
        pytest.param("units: 10", "units: 10\n  tile_multiple: 1099511627776",
                     ["compute.tile_multiple", "from 1 to 4096"], id="tile-multiple-huge"),
        pytest.param("sockets: 1", "sockets: 2",
                     ["interconnect:", "required when sockets > 1", "sockets is 2"], id="two-sockets-no-link"),
        pytest.param("sockets: 1", "sockets: 2\ninterconnect: null",
                     ["line 11", "interconnect:", "required when sockets > 1"], id="two-sockets-null-link"),
        pytest.param("sockets: 1", "sockets: 2\ninterconnect: {bandwidth: 1e400 GB/s}",
                     ["interconnect.bandwidth", "'1e400 GB/s'", "from 1 kB/s to 1 EB/s"], id="link-bandwidth-huge"),
        pytest.param("sockets: 1", "sockets: 2\ninterconnect: {bandwidth: 1 TB/s, latency: .inf}",
                     ["interconnect.latency", "inf", "finite"], id="link-latency-inf"),
    ],
)
def test_implausible_magnitudes_are_refused(
    tmp_path: Path, old: str, new: str, expected: list[str]
) -> None:
    """`targets validate` refuses what used to pass it and then crash `compile` (an
    OverflowError in placement for a capacity of 1e400 or a peak of 1e-300 FLOP/s, CP-SAT
    for a 1e300 s launch, a ValueError for two sockets without an interconnect)."""
    assert old in GOOD
    message = _error(tmp_path, GOOD.replace(old, new, 1))
    for words in expected:
        assert words in message, f"{words!r} not in:\n{message}"


def test_magnitude_bounds_are_inclusive_and_documented(tmp_path: Path) -> None:
    text = (GOOD.replace("16 GB", "1 EB").replace("100 TFLOP/s", "1 EFLOP/s")
            .replace("2 us", "1 s").replace("sockets: 1", "sockets: 65536\n"
                                            "interconnect: {bandwidth: 1 kB/s, latency: 1 s}"))
    target = load_target(_write(tmp_path, text))
    assert target.memory[1].capacity == 10**18 and target.sockets == 65536
    assert target.peak_flops("bf16") == 1e18 and target.launch_overhead == 1.0
    low = (GOOD.replace("100 TFLOP/s", "1 MFLOP/s").replace("10 TB/s", "1 TB/s")
           .replace("1 TB/s}", "1 kB/s}"))  # a spread of 1e9: the most allowed
    assert load_target(_write(tmp_path, low, "low.yaml")).peak_flops("bf16") == 1e6
    # the same bounds hold for targets built in Python, and the JSON Schema shows them
    with pytest.raises(ValueError, match="from 1 to 65536"):
        Target(name="toy", kind="cpu", host_backend="cpp", sockets=10**26,
               compute={"peak": {"fp32": "1 TFLOP/s"}, "units": 4},
               memory=[{"name": "vmem", "capacity": "1 MiB", "bandwidth": "1 TB/s"}])
    props = target_json_schema()["properties"]
    assert props["sockets"]["maximum"] == 65536
    assert "1 s" in props["launch_overhead"]["description"]


def test_validate_and_compile_share_the_interconnect_rule(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Placement refuses a multi-socket target without an interconnect; validate must too."""
    two = bundled_target_path("sn40l").read_text().replace("sockets: 1", "sockets: 2", 1)
    path = _write(tmp_path, two)
    assert _run(["targets", "validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert str(path) in err and "interconnect" in err and "sockets is 2" in err


# ----------------------------------------------------------------------------- fuzz

_FUZZ_TOKENS = (b"&a ", b"*a", b"<<: ", b"!!binary ", b"!!python/object ", b"1e400", b".inf",
                b".nan", b"-", b"[", b"]", b"{", b"}", b": ", b"\n", b"\n  ", b"#", b"'", b'"',
                b"|", b">", b"? ", b"%YAML 1.1\n", b"---\n", b"...\n", b"\t", b"\x00", b"\xff",
                b"\xc3", b"2001-13-45", b"0x", b"1:2:3", b"9" * 40, b" x ", b"e999", b"null",
                b"~", b"true", b"!!set ", b"\xef\xbb\xbf", b"\r")


# Whole values that have broken loaders: a bad date, an integer Python will not convert,
# numbers no float holds, decimal overflow, an alias, deep nesting, tags.
_FUZZ_VALUES = (b"2001-13-45", b"2001-02-30 25:61:61", b"9" * 5000, b"1e400", b"-1e400 GB",
                b"1e999999999 TB/s", b"1" * 40 + b" x 1 GB", b".inf", b"-.inf", b".nan",
                b"1.0e+400", b"1e-300", b"0", b"-0", b"*a", b"&a [1, *a]", b"[" * 60,
                b"{a: " * 30, b"!!binary AAA=", b"!!float abc", b"!!int 0x", b"!!timestamp x",
                b"1:2:3:4", b"0b102", b"0o9", b"0x1p3", b"~", b"true", b"", b"'", b'"\\x"',
                b"!!python/name:os.system", b"? [a]", b"[1, 2]", b"{}", b"1_000_000_000_000_000")


def _mutate(data: bytes, rng: random.Random) -> bytes:
    """One to four random edits: flip a bit, insert a random byte or a YAML-ish token,
    delete a run of bytes, duplicate one, or replace the value of a random `key: value`
    line by a hostile one (which a purely random edit rarely produces)."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(buf) + 1)
        op = rng.random()
        if op < 0.25 and buf:
            at = min(at, len(buf) - 1)
            buf[at] ^= 1 << rng.randrange(8)
        elif op < 0.4:
            buf[at:at] = bytes([rng.randrange(256)])
        elif op < 0.6:
            buf[at:at] = rng.choice(_FUZZ_TOKENS)
        elif op < 0.7:
            del buf[at:at + rng.randint(1, 8)]
        elif op < 0.8:
            buf[at:at] = buf[at:at + rng.randint(1, 40)]
        else:
            colons = [i for i in range(len(buf) - 1) if buf[i:i + 2] == b": "]
            if colons:
                start = rng.choice(colons) + 2
                end = buf.find(b"\n", start)
                end = len(buf) if end < 0 else end
                buf[start:end] = rng.choice(_FUZZ_VALUES)
    return bytes(buf)


def test_fuzzed_target_files_load_or_fail_cleanly(tmp_path: Path) -> None:
    """1,000 seeded byte-level mutations of a bundled file through load_target: each loads
    or raises TargetError; any other exception, or a hang, is a bug."""
    seed_file = bundled_target_path("sn40l-node").read_bytes()
    rng = random.Random(20240517)
    outcomes = {"loaded": 0, "refused": 0}

    def fuzz() -> None:
        for i in range(1000):
            data = _mutate(seed_file, rng)
            path = tmp_path / f"m{i}.yaml"
            path.write_bytes(data)
            try:
                load_target(path)
            except TargetError as exc:
                message = str(exc)
                assert str(path) in message and "Traceback" not in message, (i, data)
                outcomes["refused"] += 1
            except Exception as exc:  # noqa: BLE001 - the point of the test
                raise AssertionError(f"mutation {i} raised {exc!r}; file bytes: {data!r}") from exc
            else:
                outcomes["loaded"] += 1

    started = time.perf_counter()
    _within_seconds(60, fuzz)
    assert time.perf_counter() - started < 30
    # both outcomes happen: the mutations are neither all harmless nor all fatal
    assert outcomes["loaded"] > 50 and outcomes["refused"] > 200, outcomes
