"""Co-design exploration (issue 15): spaces, reads, reuse, resumable sweeps, search, Ray, CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from codesign.explore.evaluate import Evaluator
from codesign.explore.fields import FieldPathError, resolve
from codesign.explore.pareto import parse_constraint, parse_objectives, pareto_front
from codesign.explore.reads import Reads, recording
from codesign.explore.space import Space
from codesign.explore.store import ROWS_FILE, RowStore
from codesign.explore.summary import layer_fit, summarize_sweep
from codesign.explore.runner import SweepInterrupted, run_sweep, table
from codesign.targets import load_target

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))


def _mlp():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 32)).eval()
    return model, (torch.randn(4, 32),)


@pytest.fixture(scope="module")
def base():
    return load_target("sn40l")


@pytest.fixture(scope="module")
def mlp_graph():
    import codesign
    model, inputs = _mlp()
    return codesign.capture(model, inputs).graph


# ------------------------------------------------------------------------------ fields, space


def test_paths_resolve_by_tier_name_position_and_shorthand(base) -> None:
    for text in ("memory.sram.capacity", "memory[0].capacity", "sram.capacity"):
        assert resolve(text, base).location == ("memory", 0, "capacity")
    assert resolve("hbm.bandwidth", base).location == ("memory", 1, "bandwidth")
    assert resolve("compute.peak.bf16", base).kind == "flops"
    assert resolve("launch_overhead", base).kind == "seconds"
    assert resolve("ddr.energy_per_byte", base).kind == "energy"
    assert resolve("compute.units", base).kind == "count"
    assert resolve("streams_layers", base).kind == "bool"
    assert resolve("compute.tile_shape", base).choices == ("min_traffic", "power_of_two")


@pytest.mark.parametrize("spec, words", [
    ("sram.capcity=1MiB", ["'capcity' is not a field", "did you mean 'capacity'"]),
    ("memory.l2.capacity=1MiB", ["'l2' is not a tier", "sram, hbm, ddr"]),
    ("compute.peak.fp7=1TFLOP/s", ["'fp7' is not one of the dtypes", "bf16"]),
    ("sram.capacity=1GX", ["sram.capacity", "unknown unit 'GX'"]),
    ("sram.capacity=1GiB..64MiB:x2", ["the range is empty", "lo <= hi"]),
    ("sram.capacity=64MiB..1GiB", ["a range needs a step"]),
    ("sram.capacity=64MiB..1GiB:x1", ["multiplies by more than 1"]),
    ("name=a,b", ["not a figure one can vary"]),
    ("compute=1", ["a group of fields"]),
    ("sram.capacity", ["write PATH=VALUES"]),
    ("sram.capacity=1B..1GB:+1B", ["more than 10000 values"]),
])
def test_bad_vary_is_one_clear_error(base, spec: str, words: list[str]) -> None:
    with pytest.raises(FieldPathError) as info:
        Space.parse(base, [spec])
    message = str(info.value)
    assert "\n" not in message
    for w in words:
        assert w in message


def test_ranges_lists_and_product_order(base) -> None:
    space = Space.parse(base, ["sram.capacity=64MiB..1GiB:x2", "hbm.bandwidth=1TB/s,2TB/s",
                               "compute.peak.bf16=300TFLOP/s..900TFLOP/s:+300TFLOP/s"])
    assert space.axes[0].values == tuple(64 * 2**20 * 2**i for i in range(5))
    assert space.axes[1].values == (1e12, 2e12)
    assert space.axes[2].values == (3e14, 6e14, 9e14)
    assert len(space) == 30 == len(list(space))
    variants = list(space)
    assert variants[1].assignment() == {"sram.capacity": 64 * 2**20, "hbm.bandwidth": 1e12,
                                        "compute.peak.bf16": 6e14}  # the last axis varies fastest
    # a search's point maps to the same position in the product
    assert space.variant(variants[17].assignment()) == variants[17]
    target = variants[17].target(base)
    assert target.memory[0].capacity == variants[17].values[0][1]
    # the spatial section's per-unit share follows the socket figure (the schema checks they agree)
    assert abs(target.spatial.memory.capacity * target.spatial.memory.count - target.memory[0].capacity) \
        <= target.spatial.memory.count


def test_invalid_variant_is_a_row_not_a_crash(base, mlp_graph) -> None:
    space = Space.parse(base, ["sram.bandwidth=1TB/s,100TB/s"])  # 1 TB/s is slower than HBM
    rows = run_sweep(Evaluator(mlp_graph), space)
    assert [r["valid"] for r in rows] == [False, True]
    assert "fastest first" in rows[0]["error"] and rows[0].get("time_s") is None
    assert rows[1]["time_s"] > 0


# ------------------------------------------------------------------------------ reads and reuse


def test_recording_view_records_what_is_read(base) -> None:
    reads = Reads()
    view = recording(base, reads)
    assert view.fast_tier.capacity == base.memory[0].capacity  # a property of the schema, traced through
    assert view.peak_flops("bf16") == base.peak_flops("bf16")
    assert isinstance(view, type(base))
    paths = reads.paths()
    assert "memory[0].capacity" in paths and "compute.peak.bf16" in paths
    assert "memory[1].bandwidth" not in paths
    assert reads.hold_for(base)
    other = Space.parse(base, ["sram.capacity=1GiB"]).__iter__().__next__().target(base)
    assert not reads.hold_for(other)
    unread = Space.parse(base, ["hbm.bandwidth=2TB/s"]).__iter__().__next__().target(base)
    assert reads.hold_for(unread)
    # a copy's replaced field is its own: reading it records nothing about the target
    copy = view.model_copy(update={"calibration": None})
    assert copy.calibration is None and "calibration" not in reads.paths()


def test_reuse_gives_the_rows_of_recomputing(base, mlp_graph) -> None:
    space = Space.parse(base, ["sram.capacity=64KiB,1MiB", "hbm.energy_per_byte=20pJ,31pJ,40pJ",
                               "launch_overhead=1us,2us"])
    reused = Evaluator(mlp_graph)
    rows = run_sweep(reused, space)
    assert rows == run_sweep(Evaluator(mlp_graph, reuse=False), space)
    # no pass reads an energy figure: fusion ran once per (capacity, launch overhead), not per variant
    fuse = next(k for k in reused.cache.runs if k.startswith("fuse"))
    assert reused.cache.runs[fuse] == 4 and reused.cache.hits[fuse] == 8
    assert reused.cache.runs["canonicalize"] == 1
    read = reused.cache.read_by(reused.passes)
    assert not any("energy" in p for paths in read.values() for p in paths)
    assert len({r["energy_j"] for r in rows}) > 1  # ... but the energy figures do change the rows


# ------------------------------------------------------------------------------ store, resumption


def test_interrupted_sweep_recomputes_only_what_is_missing(base, mlp_graph, tmp_path: Path) -> None:
    space = Space.parse(base, ["sram.capacity=64KiB..1MiB:x4", "hbm.bandwidth=1TB/s,2TB/s"])
    first = Evaluator(mlp_graph)
    with pytest.raises(SweepInterrupted):
        run_sweep(first, space, store=RowStore(tmp_path), stop_after=2)
    assert first.evaluations == 2
    with (tmp_path / ROWS_FILE).open("a") as f:
        f.write('{"key": "cut sh')  # a line a kill left half-written
    second = Evaluator(mlp_graph)
    rows = run_sweep(second, space, store=RowStore(tmp_path))
    assert second.evaluations == len(space) - 2
    third = Evaluator(mlp_graph)
    assert run_sweep(third, space, store=RowStore(tmp_path)) == rows and third.evaluations == 0
    assert rows == run_sweep(Evaluator(mlp_graph), space)
    assert len(RowStore(tmp_path)) == len(space)


def test_table_is_a_dataframe_with_every_column(base, mlp_graph) -> None:
    pandas = pytest.importorskip("pandas")
    rows = run_sweep(Evaluator(mlp_graph), Space.parse(base, ["sram.bandwidth=1TB/s,100TB/s"]))
    frame = table(rows)
    assert isinstance(frame, pandas.DataFrame) and len(frame) == 2
    assert {"sram.bandwidth", "valid", "time_s", "bytes_sram", "energy_j", "cost_usd"} <= set(frame.columns)


# ------------------------------------------------------------------------------ tiny LLaMA: layers


@pytest.fixture(scope="module")
def llama_rows(base):
    from llama import tiny
    model, inputs = tiny()
    evaluator = Evaluator.from_model(model.to(torch.bfloat16), inputs, time_limit=0.5)
    space = Space.parse(base, ["sram.capacity=64KiB..1MiB:x4"])
    return space, run_sweep(evaluator, space)


def test_layer_fit_is_where_every_layer_streams(llama_rows) -> None:
    space, rows = llama_rows
    assert all(r["tokens_per_s"] == pytest.approx(32 / r["time_s"]) for r in rows)  # 2 x 16 token ids
    fit = layer_fit(space, rows)
    assert fit is not None and fit["capacity"] is not None
    at = {r["sram.capacity"]: r for r in rows}
    assert at[fit["capacity"]]["layers_streamed"] == at[fit["capacity"]]["layers"] == 2
    assert all(r["layers_streamed"] < r["layers"] for c, r in at.items() if c < fit["capacity"])
    assert fit["layer_working_set"] <= fit["capacity"]
    lines = summarize_sweep(space, rows)["lines"]
    assert any("a whole decoder layer fits on chip" in line for line in lines)


# ------------------------------------------------------------------------------ search


def test_search_front_points_re_evaluate_to_the_same_figures(base, mlp_graph) -> None:
    pytest.importorskip("optuna")
    from codesign.explore.search import run_search
    space = Space.parse(base, ["sram.capacity=64KiB..4MiB:x2", "hbm.bandwidth=1TB/s..3TB/s:+0.5TB/s",
                               "compute.peak.bf16=300TFLOP/s..900TFLOP/s:+100TFLOP/s"])
    columns = ["time_s", "area_mm2", "cost_usd"]
    objectives = parse_objectives("time,sram.capacity,cost", base, columns)
    limit = parse_constraint("sram.capacity<=2MiB", base, columns)
    result = run_search(Evaluator(mlp_graph, time_limit=0.5), space, objectives, [limit], trials=16, seed=0)
    assert result.front and len(result.rows) <= 16
    assert all(r["sram.capacity"] <= 2 * 2**20 for r in result.front)
    assert result.front == pareto_front(result.rows, objectives, [limit])
    fresh = Evaluator(mlp_graph, time_limit=0.5, reuse=False)
    for row in result.front:
        target = space.variant({a.name: row[a.name] for a in space.axes}).target(base)
        again = fresh.evaluate(target)
        assert {k: row[k] for k in again} == again
    # the same seed gives the same trials
    assert run_search(Evaluator(mlp_graph, time_limit=0.5), space, objectives, [limit], trials=16,
                      seed=0).rows == result.rows


def test_pareto_front_keeps_only_undominated_rows() -> None:
    from codesign.explore.pareto import Objective
    rows = [{"valid": True, "a": a, "b": b} for a, b in [(1, 5), (2, 2), (3, 3), (5, 1), (2, 2)]]
    objectives = [Objective("a", "a", "min"), Objective("b", "b", "min")]
    assert [(r["a"], r["b"]) for r in pareto_front(rows, objectives)] == [(1, 5), (2, 2), (5, 1), (2, 2)]


# ------------------------------------------------------------------------------ Ray


def test_ray_rows_equal_serial_rows(base, mlp_graph, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    space = Space.parse(base, ["sram.capacity=64KiB..1MiB:x4", "hbm.bandwidth=1TB/s,2TB/s"])
    serial = run_sweep(Evaluator(mlp_graph), space)
    parallel = run_sweep(Evaluator(mlp_graph), space, store=RowStore(tmp_path), ray=True, workers=2)
    assert json.dumps(parallel) == json.dumps(serial)
    import ray
    assert not ray.is_initialized()  # the local cluster was shut down


# ------------------------------------------------------------------------------ CLI


def test_cli_sweep_writes_rows_summary_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from codesign.cli import main
    factory = tmp_path / "mlp.py"
    factory.write_text("import torch\n\ndef make():\n    torch.manual_seed(0)\n"
                       "    m = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 32))\n"
                       "    return m.eval(), (torch.randn(4, 32),)\n")
    out = tmp_path / "out"
    argv = ["sweep", f"{factory}:make", "--target", "sn40l", "--vary", "sram.capacity=64KiB,1MiB",
            "--vary", "hbm.bandwidth=1TB/s,2TB/s", "--out", str(out), "--json", "--time-limit", "0.5"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert len(printed["rows"]) == 4 and printed["findings"]["lines"]
    saved = json.loads((out / "sweep.json").read_text())
    assert saved["rows"] == printed["rows"] and saved["space"][0]["field"] == "memory[0].capacity"
    assert (out / "sweep.csv").read_text().count("\n") == 5
    assert (out / "sensitivity.png").stat().st_size > 1000
    assert main(argv) == 0  # again: every row from the store
    assert json.loads(capsys.readouterr().out)["rows"] == printed["rows"]
    assert main(["sweep", f"{factory}:make", "--target", "sn40l", "--vary", "sram.capacity=1GiB..1MiB:x2"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("codesign: error: sram.capacity") and err.count("\n") == 1


def test_python_api_returns_a_table(mlp_graph) -> None:
    import codesign
    model, inputs = _mlp()
    frame = codesign.sweep(model, inputs, "sn40l", {"sram.capacity": ["64KiB", "1MiB"]}, time_limit=0.5)
    rows = frame.to_dict("records") if hasattr(frame, "to_dict") else frame
    assert [r["sram.capacity"] for r in rows] == [64 * 1024, 2**20]
    assert rows[1]["time_s"] <= rows[0]["time_s"]


def test_cli_search_prints_the_front_and_refuses_bad_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("optuna")
    from codesign.cli import main
    factory = tmp_path / "mlp.py"
    factory.write_text("import torch\n\ndef make():\n    torch.manual_seed(0)\n"
                       "    m = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 32))\n"
                       "    return m.eval(), (torch.randn(4, 32),)\n")
    base = ["search", f"{factory}:make", "--target", "sn40l", "--space", "sram.capacity=64KiB..1MiB:x4",
            "--space", "hbm.bandwidth=1TB/s,2TB/s", "--space", "launch_overhead=1us,2us", "--time-limit", "0.5"]
    assert main(base + ["--objectives", "time,sram.capacity", "--trials", "6", "--json",
                        "--out", str(tmp_path / "out")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["front"] and all(r["valid"] for r in printed["front"])
    assert (tmp_path / "out" / "pareto.png").stat().st_size > 1000
    assert main(base + ["--objectives", "tme"]) == 1
    assert "did you mean 'time'?" in capsys.readouterr().err
