"""The targets' `spatial:` section (issue 19): bundled figures, and inconsistent sections refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from codesign.targets import TargetError, load_target
from codesign.targets.loader import bundled_target_path

KiB, MiB = 1024, 1024 ** 2
SPATIAL = ("sn40l", "sn40l-node", "edge-simba")


@pytest.mark.parametrize("name", SPATIAL)
def test_spatial_targets_add_up_to_their_socket(name: str) -> None:
    target = load_target(name)
    sp = target.spatial
    assert sp is not None and sp.compute.count == target.compute.units
    for dtype, rate in sp.compute.peak.items():
        if dtype in target.compute.peak:
            assert rate * sp.compute.count == pytest.approx(target.compute.peak[dtype], rel=0.02)
    assert sp.memory.capacity * sp.memory.count == pytest.approx(target.memory[0].capacity, rel=0.02)
    cells = sp.cells()
    assert sum(k == "compute" for k, *_ in cells) == sp.compute.count
    assert sum(k == "memory" for k, *_ in cells) == sp.memory.count
    assert target.reload_tier.name == target.memory[1].name
    # every figure of the section is cited or labelled an assumption
    text = bundled_target_path(name).read_text().split("\nspatial:")[1]
    for line in text.splitlines():
        if any(c.isdigit() for c in line.split("#")[0]) and "launch_overhead" not in line:
            assert "#" in line, f"{name}: spatial figure without a source: {line.strip()}"


def test_sn40l_spatial_figures_from_the_paper() -> None:
    sp = load_target("sn40l").spatial
    assert sp.compute.count == 1040 and sp.memory.count == 1040
    assert sp.memory.capacity == 512 * KiB  # 520 MiB / 1040
    assert sp.compute.peak["bf16"] * 1040 == pytest.approx(638e12, rel=1e-3)
    assert load_target("cpu-host").spatial is None


def _bad(tmp_path: Path, old: str, new: str, name: str = "sn40l") -> str:
    text = bundled_target_path(name).read_text()
    assert old in text
    path = tmp_path / "chip.yaml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(TargetError) as info:
        load_target(path)
    message = str(info.value)
    assert "chip.yaml" in message and "Traceback" not in message
    return message


@pytest.mark.parametrize("old,new,expected", [
    ("count: 1040             # 1040 PCUs", "count: 1000             #", "spatial.compute.count (1000) must equal compute.units (1040)"),
    ("dims: [52, 40]", "dims: [52, 41]", "spatial.network.dims [52, 41] give 2132 switches"),
    ("reload_from: hbm", "reload_from: hmb", "names no memory tier 'hmb'"),
    ("reload_from: hbm", "reload_from: sram", "the fast tier the memory units make up"),
    ("topology: mesh", "topology: ring", "spatial.network.topology"),
    ("banks: 16", "banks: 0", "spatial.memory.banks"),
])
def test_inconsistent_spatial_sections_are_refused(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert expected in _bad(tmp_path, old, new)


@pytest.mark.parametrize("old,new,expected", [
    ("int8: 250 GOPS", "int8: 1 TOPS", "spatial.compute.peak.int8 x count is 16 TFLOP/s"),
    ("capacity: 43 KiB", "capacity: 64 KiB", "spatial.memory.capacity x count"),
    ("bandwidth: 128 GB/s", "bandwidth: 1 TB/s", "spatial.memory.bandwidth x count"),
])
def test_per_unit_figures_must_add_up(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert expected in _bad(tmp_path, old, new, "edge-simba")


def test_left_out_unit_figures_follow_a_what_if_socket(tmp_path: Path) -> None:
    """sn40l leaves the PMU capacity derived, so a smaller SRAM shrinks every PMU."""
    path = tmp_path / "small.yaml"
    path.write_text(bundled_target_path("sn40l").read_text().replace("capacity: 520 MiB", "capacity: 52 MiB"))
    assert load_target(path).spatial.memory.capacity == 52 * MiB // 1040
