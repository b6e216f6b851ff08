"""Render a saved `report.html` in headless Chromium: a screenshot, and the DOM as Chromium built it.

    python scripts/screenshot_report.py out/report.html [--png out/report.png] [--width 1280 --height 2400]

Needs Chromium (Debian: `apt-get install chromium`; or `chromium-browser` / `google-chrome` on
PATH). Prints what the rendered page holds (its title, the number of tables, rows and
embedded images) and writes the screenshot; `tests/test_html_report.py` runs it and checks
both. Exit 1 with one line when no Chromium is found or it fails.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


class Outline(HTMLParser):
    """Title, tables, rows and images of an HTML document."""

    def __init__(self) -> None:
        super().__init__()
        self.title, self.tables, self.rows, self.images, self.captions = "", 0, 0, [], []
        self._in: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in.append(tag)
        if tag == "table":
            self.tables += 1
        elif tag == "tr":
            self.rows += 1
        elif tag == "img":
            self.images.append(dict(attrs).get("src") or "")
        elif tag == "caption":
            self.captions.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._in:
            while self._in.pop() != tag:
                pass

    def handle_data(self, data: str) -> None:
        if self._in and self._in[-1] == "title":
            self.title += data
        elif self._in and self._in[-1] == "caption":
            self.captions[-1] += data


def outline(text: str) -> Outline:
    parser = Outline()
    parser.feed(text)
    return parser


def render(report: Path, png: Path, width: int, height: int, browser: str) -> str:
    """Screenshot `report` into `png`; return the DOM Chromium rendered."""
    url = report.resolve().as_uri()
    with tempfile.TemporaryDirectory() as profile:  # a fresh profile: no state of the user's browser
        common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                  f"--user-data-dir={profile}", f"--window-size={width},{height}"]
        subprocess.run([*common, f"--screenshot={png}", url], check=True, capture_output=True, timeout=120)
        dom = subprocess.run([*common, "--dump-dom", url], check=True, capture_output=True, text=True, timeout=120)
    return dom.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--png", type=Path, help="screenshot file (default: beside the report)")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=2400)
    args = parser.parse_args()
    browser = find_chromium()
    if browser is None:
        print("screenshot_report: no Chromium on PATH (apt-get install chromium)", file=sys.stderr)
        return 1
    png = args.png or args.report.with_suffix(".png")
    try:
        dom = render(args.report, png, args.width, args.height, browser)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        print(f"screenshot_report: {browser} failed: {exc}", file=sys.stderr)
        return 1
    page = outline(dom)
    print(json.dumps({"title": page.title, "tables": page.tables, "rows": page.rows, "captions": page.captions,
                      "images": len(page.images), "screenshot": str(png)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
