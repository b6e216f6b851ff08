"""Resumable results: one JSON line per finished variant, keyed by the variant's hash.

A sweep appends each row as soon as it is computed (and flushes it), so an interrupted
sweep loses at most the variant in flight; run again with the same folder, it finds the
rows whose keys it needs and computes only the missing ones. The key hashes everything a row
depends on (the captured graph, the pipeline and its time limit, codesign's version, every
figure of the variant's target), so a stored row is never taken for another sweep's, and
one folder may hold the rows of several sweeps of the same model. A line cut short by a
kill is ignored (and computed again).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

__all__ = ["RowStore", "ROWS_FILE"]

ROWS_FILE = "rows.jsonl"


class RowStore:
    """Rows by key, backed by `folder/rows.jsonl` (or held in memory when `folder` is None)."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self.path = Path(folder) / ROWS_FILE if folder is not None else None
        self._rows: dict[str, dict[str, Any]] = {}
        self._cut = False  # the file ends inside a line (a killed write): start the next on its own
        if self.path is not None and self.path.is_file():
            text = self.path.read_text(encoding="utf-8", errors="replace")
            self._cut = bool(text) and not text.endswith("\n")
            for line in text.splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the last line of a killed run
                if isinstance(entry, dict) and isinstance(entry.get("key"), str) and isinstance(entry.get("row"), dict):
                    self._rows[entry["key"]] = entry["row"]

    def __contains__(self, key: str) -> bool:
        return key in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def get(self, key: str) -> dict[str, Any] | None:
        return self._rows.get(key)

    def put(self, key: str, row: dict[str, Any]) -> None:
        """Keep `row` and append it to the file at once (one line, flushed)."""
        self._rows[key] = row
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as file:
                file.write(("\n" if self._cut else "") + json.dumps({"key": key, "row": row}, sort_keys=True) + "\n")
                self._cut = False
                file.flush()
