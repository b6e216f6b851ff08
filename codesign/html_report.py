"""`report.html`: a compiled model's report as one page a person can open and browse.

`cm.save(dir)` writes it beside `report.txt`. One self-contained file: the style is inline,
the plots are embedded as base64 PNG, nothing is fetched, so it can be mailed or attached to
an issue. It holds what the text report holds — the model's figures, the kernel table, the
fusion groups with their tiles, the tier placement, the memory tiers — plus the decision
ledger (every candidate the passes weighed, and why) and the plots.

The tables are the text report's own `rich` tables (`cost.report.kernel_table`,
`placement.report.placement_tables`), turned into HTML `<table>`s by `table_html`, so the
two reports cannot disagree. Plain string formatting, every value escaped; the page is a
pure function of the module (no dates), so saving twice writes the same bytes.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping

from rich.table import Table

if TYPE_CHECKING:
    from codesign.compiler import CompiledModule

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 80em;
       color: #1d2330; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #d0d5dd; padding-bottom: 0.2em; }
p.meta { color: #5a6375; margin-top: 0; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; margin: 0.8em 0 1.4em; font-size: 0.88em; }
caption { text-align: left; font-weight: 600; padding-bottom: 0.3em; }
th, td { border: 1px solid #d0d5dd; padding: 0.25em 0.6em; vertical-align: top; }
th { background: #eef1f6; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #f8f9fb; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #d0d5dd; }
code { font-size: 0.95em; }
details summary { cursor: pointer; color: #3656a5; }
"""


def _cell(value: object) -> str:
    return html.escape(str(value))


def table_html(table: Table) -> str:
    """A rich `Table` as an HTML `<table>`: its title as the caption, its columns' headers
    and cells; right-justified columns (the numbers) keep their alignment."""
    columns = list(table.columns)
    cells = [list(c.cells) for c in columns]
    rows = max((len(c) for c in cells), default=0)
    out = ["<table>"]
    if table.title:
        out.append(f"<caption>{_cell(table.title)}</caption>")
    if table.show_header:
        out.append("<tr>" + "".join(f"<th>{_cell(c.header)}</th>" for c in columns) + "</tr>")
    for r in range(rows):
        tds = []
        for column, col_cells in zip(columns, cells):
            value = col_cells[r] if r < len(col_cells) else ""
            klass = ' class="num"' if column.justify == "right" else ""
            tds.append(f"<td{klass}>{_cell(value)}</td>")
        out.append("<tr>" + "".join(tds) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _rows_table(title: str, header: Iterable[str], rows: Iterable[Iterable[object]],
                numeric: Iterable[str] = ()) -> Table:
    table = Table(title=title)
    numeric = set(numeric)
    for name in header:
        table.add_column(name, justify="right" if name in numeric else "left")
    for row in rows:
        table.add_row(*(str(v) for v in row))
    return table


def _model_table(module: CompiledModule) -> Table:
    from codesign.targets.units import format_bytes, format_flops
    s = module.stats()
    rows = [("parameters", f"{s.param_count:,}"), ("parameter bytes", format_bytes(s.param_bytes)),
            ("buffer bytes", format_bytes(s.buffer_bytes)), ("input bytes", format_bytes(s.input_bytes)),
            ("activation bytes (all values)", format_bytes(s.activation_bytes)),
            ("peak live activations (unfused)", format_bytes(s.peak_activation_bytes)),
            ("FLOPs", f"{s.flops:,} ({format_flops(s.flops).replace('/s', '')})")]
    return _rows_table("model", ("what", "value"), rows, numeric=("value",))


def _groups_table(module: CompiledModule) -> Table:
    """Each fusion group: kind, anchor, member count, and its plan's tiles per tier."""
    graph = module.graph
    members: dict[int, int] = {}
    for node in graph.nodes:
        if node.group is not None:
            members[node.group] = members.get(node.group, 0) + 1
    tiers = list(module.target.tier_names)
    rows = []
    for group in graph.groups:
        attrs = dict(group.attrs)
        tiles = [", ".join(f"{k[5:]}={attrs[k]}" for k in attrs if k == f"tile_{t}") for t in tiers]
        rows.append((f"g{group.id}", attrs.get("kind", ""), attrs.get("anchor", ""), members.get(group.id, 0),
                     "; ".join(t for t in tiles if t) or "-",
                     ", ".join(f"{k}={v}" for k, v in attrs.items() if k not in ("kind", "anchor")
                               and not k.startswith("tile_")) or "-"))
    return _rows_table(f"fusion groups and tiles ({len(rows)})", ("group", "kind", "anchor", "nodes", "tiles",
                                                                  "other plan fields"), rows, numeric=("nodes",))


def _tiers_table(module: CompiledModule) -> Table:
    from codesign.targets.units import format_bandwidth, format_bytes
    target = module.target
    s = module.stats()
    weights = s.param_bytes + s.buffer_bytes
    rows = [(t.name, format_bytes(target.total_capacity(t.name)), format_bandwidth(target.total_bandwidth(t.name)),
             "yes" if weights <= target.total_capacity(t.name) else "no") for t in target.memory]
    return _rows_table(f"memory tiers of {target.name}", ("tier", "capacity", "bandwidth", "weights fit"), rows,
                       numeric=("capacity", "bandwidth"))


def _ledger_html(module: CompiledModule) -> str:
    """The decision ledger, one row per decision; its data (score parts, what-if times) folded."""
    rows = ["<table>", f"<caption>decision ledger ({len(module.ledger)} decisions)</caption>",
            "<tr><th>#</th><th>pass</th><th>subject</th><th>choice</th><th>reason</th><th>data</th></tr>"]
    for i, d in enumerate(module.ledger):
        data = json.dumps(dict(d.data), sort_keys=True, default=str) if d.data else ""
        folded = (f"<details><summary>{len(d.data)} fields</summary><code>{_cell(data)}</code></details>"
                  if data else "")
        rows.append(f"<tr><td class=\"num\">{i}</td><td>{_cell(d.pass_name)}</td><td>{_cell(d.subject)}</td>"
                    f"<td>{_cell(d.choice)}</td><td>{_cell(d.reason)}</td><td>{folded}</td></tr>")
    rows.append("</table>")
    return "\n".join(rows)


def _figure(title: str, png: Path) -> str:
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{_cell(title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_cell(title)}</figcaption></figure>")


def render_html(module: CompiledModule, plots: Mapping[str, Path]) -> str:
    """The page for `module`; `plots` maps a caption to a PNG file to embed (save() writes them)."""
    from codesign.cost.report import cost_model_label, kernel_table
    from codesign.targets.units import format_time
    target = module.target
    fusion = module.fusion()
    kinds = {f"g{g.id}": str(g.attrs.get("kind", "")) for g in module.graph.groups}
    title = f"codesign report: @{module.graph.name} for {target.name}"
    sections: list[tuple[str, str, str]] = [
        ("model", "Model", table_html(_model_table(module))),
        ("kernels", "Kernels", table_html(kernel_table(fusion.fused, target, kinds, limit=10**9))),
        ("groups", "Fusion groups and tiles", table_html(_groups_table(module))),
    ]
    plan = module.placement()
    placement = table_html(_tiers_table(module))
    if plan is not None:
        from codesign.placement.report import placement_tables
        placement = "\n".join(table_html(t) for t in placement_tables(plan)) + "\n" + placement
    sections.append(("placement", "Tier placement", placement))
    sections.append(("ledger", "Decision ledger", _ledger_html(module)))
    if plots:
        sections.append(("plots", "Plots", "\n".join(_figure(name, path) for name, path in plots.items())))
    nav = " ".join(f'<a href="#{key}">{_cell(name)}</a>' for key, name, _ in sections)
    body = "\n".join(f'<h2 id="{key}">{_cell(name)}</h2>\n{content}' for key, name, content in sections)
    meta = (f"{target.kind} target, {target.sockets} socket{'s' if target.sockets > 1 else ''}; pipeline "
            f"<code>{_cell(module.pipeline or '(none)')}</code>; capture {_cell(module.capture_method)}; "
            f"{len(module.graph.nodes)} nodes<br>predicted time: eager-style {_cell(format_time(fusion.unfused.time))} "
            f"({fusion.unfused.launches} kernels) &rarr; compiled {_cell(format_time(fusion.fused.time))} "
            f"({fusion.fused.launches} kernels): {fusion.speedup:.2f}x; cost model: {_cell(cost_model_label(target))}")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{_cell(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            f"<h1>{_cell(title)}</h1>\n<p class=\"meta\">{meta}</p>\n<nav>{nav}</nav>\n{body}\n</body>\n</html>\n")
