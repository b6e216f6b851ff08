"""``codesign targets list | show NAME | validate FILE | schema``.

The main CLI calls :func:`add_targets_parser` on its sub-parsers and then ``args.func(args)``,
which returns the process exit code. Output goes to ``sys.stdout`` / ``sys.stderr`` as they
are at call time, so tests can capture it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from .units import format_bandwidth, format_bytes, format_flops, format_time

if TYPE_CHECKING:
    from .schema import Target

# The loader and the schema (pydantic) are imported by the commands that read a target, not
# by the parser: `codesign --help` builds this parser too.

__all__ = ["add_targets_parser"]


def add_targets_parser(subparsers: Any) -> None:
    """Register ``targets`` and its sub-commands on an argparse ``_SubParsersAction``."""
    targets = subparsers.add_parser(
        "targets", help="list, show, validate target descriptions", description=__doc__
    )
    targets.set_defaults(func=_print_help(targets))
    commands = targets.add_subparsers(dest="targets_command", metavar="COMMAND")

    listing = commands.add_parser("list", help="table of the bundled targets")
    listing.add_argument("--json", action="store_true", help="print every bundled target as JSON (SI units)")
    listing.set_defaults(func=_list)

    show = commands.add_parser("show", help="every field of one target, with units")
    show.add_argument("target", metavar="NAME_OR_FILE", help="bundled name or .yaml path")
    show.add_argument("--json", action="store_true", help="print the target as JSON (SI units)")
    show.set_defaults(func=_show)

    validate = commands.add_parser("validate", help="check a target file, report all problems")
    validate.add_argument("file", metavar="FILE", help="path of a target .yaml file")
    validate.set_defaults(func=_validate)

    schema = commands.add_parser("schema", help="print the JSON Schema of a target file")
    schema.set_defaults(func=_schema)


def _console() -> Console:
    # markup off: names such as "memory[1]" must print as written, not as rich tags.
    return Console(file=sys.stdout, markup=False, highlight=False, soft_wrap=False)


def _print_help(parser: argparse.ArgumentParser) -> Any:
    def run(args: argparse.Namespace) -> int:
        parser.print_help(sys.stdout)
        return 0

    return run


def _peak(target: Target, dtype: str) -> str:
    from .schema import TargetLookupError
    try:
        return format_flops(target.peak_flops(dtype))
    except TargetLookupError:
        return "-"


def _as_json(target: Target) -> dict:
    """The validated target as plain data: bytes, bytes/s, FLOP/s and seconds."""
    return target.model_dump(mode="json")


def _list(args: argparse.Namespace) -> int:
    from .loader import list_targets, load_target
    if getattr(args, "json", False):
        data = [_as_json(load_target(name)) for name in list_targets()]
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
        return 0
    table = Table(title="bundled targets")
    for column in ("name", "kind", "sockets", "peak bf16", "memory (per socket)"):
        table.add_column(column, no_wrap=column != "memory (per socket)")
    for name in list_targets():
        target = load_target(name)
        tiers = ", ".join(f"{t.name} {format_bytes(t.capacity)}" for t in target.memory)
        table.add_row(name, target.kind, str(target.sockets), _peak(target, "bf16"), tiers)
    _console().print(table)
    return 0


def _show(args: argparse.Namespace) -> int:
    from .loader import TargetError, load_target
    try:
        target = load_target(args.target)
    except TargetError as exc:
        print(f"codesign: error: {exc}", file=sys.stderr)
        return 1
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(_as_json(target), indent=2, sort_keys=True) + "\n")
        return 0
    console = _console()
    console.print(f"{target.name}: {target.description}")

    facts = Table(show_header=False, box=None, pad_edge=False)
    facts.add_column("field", style="bold")
    facts.add_column("value")
    facts.add_row("kind", target.kind)
    facts.add_row("host_backend", target.host_backend)
    facts.add_row("sockets", str(target.sockets))
    facts.add_row("compute.units", str(target.compute.units))
    facts.add_row("compute.tile_multiple", str(target.compute.tile_multiple))
    facts.add_row("compute.tile_shape", target.compute.tile_shape)
    facts.add_row("streams_layers", "yes" if target.streams_layers else "no")
    for dtype, rate in target.compute.peak.items():
        facts.add_row(f"compute.peak.{dtype}", format_flops(rate))
    facts.add_row("dma", "yes" if target.dma else "no")
    facts.add_row("launch_overhead", format_time(target.launch_overhead))
    if target.interconnect is None:
        facts.add_row("interconnect", "-")
    else:
        link = target.interconnect
        latency = f", latency {format_time(link.latency)}" if link.latency is not None else ""
        facts.add_row("interconnect", f"{format_bandwidth(link.bandwidth)}{latency}")
        if link.description:
            facts.add_row("", link.description)
    console.print(facts)

    console.print(_tier_table(target))
    return 0


def _tier_table(target: Target) -> Table:
    """Memory tiers, fastest first; columns that would be all '-' are left out."""
    from .schema import HOLDS
    columns: dict[str, list[str]] = {"tier": [t.name for t in target.memory]}
    columns["capacity"] = [format_bytes(t.capacity) for t in target.memory]
    if any(t.scope == "per_unit" for t in target.memory):
        columns["per unit"] = [
            format_bytes(target.unit_capacity(t.name)) if t.scope == "per_unit" else "-"
            for t in target.memory
        ]
    if target.sockets > 1:
        columns["node total"] = [format_bytes(target.total_capacity(t.name)) for t in target.memory]
    columns["bandwidth"] = [format_bandwidth(t.bandwidth) for t in target.memory]
    if any(t.latency is not None for t in target.memory):
        columns["latency"] = [
            format_time(t.latency) if t.latency is not None else "-" for t in target.memory
        ]
    columns["scope"] = [t.scope for t in target.memory]
    columns["holds"] = [
        "all" if set(t.holds) == set(HOLDS) else ", ".join(t.holds) for t in target.memory
    ]

    table = Table(title="memory, fastest first (figures per socket)")
    for header in columns:
        table.add_column(header, no_wrap=header != "holds")
    for row in zip(*columns.values()):
        table.add_row(*row)
    return table


def _validate(args: argparse.Namespace) -> int:
    from .loader import TargetError, load_target
    try:
        # A Path, so that a file named like a bundled target is still read as a file.
        target = load_target(Path(args.file))
    except TargetError as exc:
        print(f"codesign: error: {exc}", file=sys.stderr)
        return 1
    print(f"ok: {args.file} is a valid target {target.name!r}")
    return 0


def _schema(args: argparse.Namespace) -> int:
    from .loader import target_json_schema
    sys.stdout.write(json.dumps(target_json_schema(), indent=2) + "\n")
    return 0
