"""`cm.save(dir)` writes `report.html` (issue 16): one self-contained page with the tables,
the decision ledger and the plots; parsed here, and rendered in headless Chromium when it
is installed (`scripts/screenshot_report.py`)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import codesign

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from screenshot_report import find_chromium, outline  # noqa: E402


class Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.norm = torch.nn.LayerNorm(32)
        self.up, self.down = torch.nn.Linear(32, 64), torch.nn.Linear(64, 32)

    def forward(self, x):
        return x + self.down(torch.nn.functional.gelu(self.up(self.norm(x))))


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    cm = codesign.compile(Block().eval(), (torch.randn(8, 32),), target="h100")
    return cm.save(tmp_path_factory.mktemp("report") / "out")


def test_report_html_is_one_self_contained_page(saved) -> None:
    text = (saved / "report.html").read_text(encoding="utf-8")
    page = outline(text)
    assert page.title == "codesign report: @Block for h100"
    captions = " | ".join(page.captions)
    for table in ("model", "kernels (", "fusion groups and tiles", "placement on h100", "memory tiers of h100",
                  "decision ledger ("):
        assert table in captions, captions
    assert page.tables >= 6 and page.rows > 10
    assert page.images and all(src.startswith("data:image/png;base64,") for src in page.images)
    for src in page.images:
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    lowered = text.lower()
    assert "<script" not in lowered and "<link" not in lowered and "http://" not in lowered and "https://" not in lowered
    ledger = json.loads((saved / "ledger.json").read_text())
    assert f"decision ledger ({len(ledger)} decisions)" in captions  # every decision of ledger.json


def test_report_html_is_the_same_when_saved_twice(saved) -> None:
    first = (saved / "report.html").read_bytes()
    cm = codesign.compile(Block().eval(), (torch.randn(8, 32),), target="h100")
    assert cm.save(saved.parent / "again").joinpath("report.html").read_bytes() == first


@pytest.mark.skipif(find_chromium() is None, reason="Chromium is not installed (apt-get install chromium)")
def test_report_html_renders_in_headless_chromium(saved, tmp_path) -> None:
    from PIL import Image
    png = tmp_path / "report.png"
    run = subprocess.run([sys.executable, str(ROOT / "scripts/screenshot_report.py"), str(saved / "report.html"),
                          "--png", str(png), "--width", "1200", "--height", "1600"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    rendered = json.loads(run.stdout)
    assert rendered["title"] == "codesign report: @Block for h100"  # as Chromium parsed it
    assert rendered["tables"] >= 6 and rendered["images"] >= 1
    image = Image.open(png).convert("L")
    assert image.size == (1200, 1600)
    lo, hi = image.getextrema()
    assert hi - lo > 100  # text and tables drawn, not a blank page
    dark = sum(image.histogram()[:128])
    assert dark > 0.005 * 1200 * 1600
