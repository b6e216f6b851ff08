"""`codesign explain`: the decision ledger as a table or JSON — why each fusion was or wasn't made."""

from __future__ import annotations

import io
import json
from typing import Sequence

from rich.console import Console
from rich.table import Table

from codesign.passes.manager import Decision


def ledger_records(ledger: Sequence[Decision]) -> list[dict]:
    return [{"pass": d.pass_name, "subject": d.subject, "choice": d.choice, "reason": d.reason,
             **{k: v for k, v in d.data.items()}} for d in ledger]


def render_ledger(ledger: Sequence[Decision], as_json: bool = False, width: int = 140) -> str:
    if as_json:
        return json.dumps(ledger_records(ledger), indent=2, sort_keys=True, default=str) + "\n"
    table = Table(title=f"decision ledger ({len(ledger)} decisions)")
    for col in ("pass", "candidate", "decision", "rule", "separate", "fused", "reason"):
        table.add_column(col, justify="right" if col in ("separate", "fused") else "left")
    for d in ledger:
        sep, fused = d.data.get("separate_time"), d.data.get("fused_time")
        table.add_row(d.pass_name, d.subject, d.choice, str(d.data.get("rule", "")),
                      f"{sep * 1e6:.3f} us" if isinstance(sep, float) else "",
                      f"{fused * 1e6:.3f} us" if isinstance(fused, float) else "", d.reason)
    buf = io.StringIO()
    Console(file=buf, width=width, markup=False, highlight=False, color_system=None).print(table)
    return buf.getvalue()
