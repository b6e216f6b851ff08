"""Lint: a decision about an op asks its traits, template, kind or structure, never its name.

Every `.py` under `codesign/` is parsed with `ast`; an offence is a comparison (`==`, `!=`,
`in`, `not in`, a `match` case), or a lookup in a table, where one side is an op-name
expression (`node.op`, `x.op_name`, a variable `op` / `op_name`, `get_op(...).name`) and the
other is a string literal naming a registered op (`codesign.ir.ops.OPS`), a literal
tuple / list / set / frozenset / dict of such strings, or a name bound to one (a module or
class-level table such as `_NEUTRAL = {"mul": 1, "add": 0}`, also through an import).
A rule about one specific op compares against the OpDef its module exports
(`get_op(node.op) is RESHAPE`), as xDSL matches patterns on op classes.

`codesign/ir/ops/` (where ops are defined) and `codesign/frontend/` (ATen converters and
capture patterns, which map names to names) are exempt.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import codesign
from codesign.ir.ops import OPS

ROOT = Path(codesign.__file__).resolve().parent
EXEMPT = ("ir/ops/", "frontend/")
OP_NAMES = frozenset({"op", "op_name", "opname"})  # variables holding an op's name
OP_ATTRS = frozenset({"op", "op_name"})  # attributes holding an op's name (node.op)
OP_NAME_SET = frozenset(OPS)


def _is_op_side(e: ast.expr) -> bool:
    """An expression that evaluates to an op's name."""
    if isinstance(e, ast.Name):
        return e.id in OP_NAMES
    if isinstance(e, ast.Attribute):
        if e.attr in OP_ATTRS:
            return True
        # get_op(x).name / OPS[x].name
        if e.attr == "name" and isinstance(e.value, ast.Call) and _callee(e.value) == "get_op":
            return True
    return False


def _callee(call: ast.Call) -> str | None:
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None


def _literal_names(e: ast.expr | None) -> list[str] | None:
    """The op names a literal (string, or collection of strings) names; None if it is not one.

    A collection counts when every element is a string literal and at least one names an op.
    """
    if e is None:
        return None
    if isinstance(e, ast.Constant):
        return [e.value] if isinstance(e.value, str) and e.value in OP_NAME_SET else None
    if isinstance(e, ast.Call) and _callee(e) in ("frozenset", "set", "tuple", "list") \
            and len(e.args) == 1 and not e.keywords:
        return _literal_names(e.args[0])
    if isinstance(e, (ast.Tuple, ast.List, ast.Set)):
        elts = e.elts
    elif isinstance(e, ast.Dict):
        elts = e.keys
    else:
        return None
    if not elts or not all(isinstance(x, ast.Constant) and isinstance(x.value, str) for x in elts):
        return None
    names = [x.value for x in elts if x.value in OP_NAME_SET]
    return names or None


def _tables(tree: ast.Module) -> dict[str, int]:
    """Names bound (in any scope: module, class, function) to op-name tables: name -> line."""
    found: dict[str, int] = {}
    for stmt in ast.walk(tree):
        if isinstance(stmt, ast.Assign):
            targets, value = stmt.targets, stmt.value
        elif isinstance(stmt, ast.AnnAssign):
            targets, value = [stmt.target], stmt.value
        else:
            continue
        if _literal_names(value):
            for t in targets:
                if isinstance(t, ast.Name):
                    found[t.id] = stmt.lineno
                elif isinstance(t, ast.Attribute):  # self.T = {...}
                    found[t.attr] = stmt.lineno
    return found


def _modules(root: Path) -> dict[Path, str]:
    """Every .py under `root` (laid out as the codesign package) and its dotted module name."""
    return {p: ".".join(("codesign",) + p.relative_to(root).with_suffix("").parts)
            .removesuffix(".__init__") for p in sorted(root.rglob("*.py"))}


def _imported_tables(tree: ast.Module, module: str, tables: dict[str, dict[str, int]]) -> dict[str, str]:
    """Local names bound by `from m import T` to a table T of module m: name -> 'm.T'."""
    found: dict[str, str] = {}
    package = module.rsplit(".", 1)[0] if "." in module else module
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package.split(".")
            base = base[:len(base) - (node.level - 1)]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        for alias in node.names:
            if alias.name in tables.get(source, {}):
                found[alias.asname or alias.name] = f"{source}.{alias.name}"
    return found


def _table_ref(e: ast.expr, local: dict[str, int], imported: dict[str, str]) -> str | None:
    """`e` names an op-name table: `T`, `self.T`, `cls.T`, `Class.T` or an imported `T`."""
    name = e.id if isinstance(e, ast.Name) else e.attr if isinstance(e, ast.Attribute) else None
    if name is None:
        return None
    if isinstance(e, ast.Attribute) and not isinstance(e.value, ast.Name):
        return None
    if name in local:
        return f"{name} (line {local[name]})"
    if isinstance(e, ast.Name) and name in imported:
        return imported[name]
    return None


def offences_in(source: str, filename: str, tables: dict[str, dict[str, int]] | None = None,
                module: str = "") -> list[str]:
    """`file:line: message` for every op-name decision in `source`."""
    tree = ast.parse(source, filename)
    tables = tables or {}
    local = _tables(tree)
    imported = _imported_tables(tree, module, tables)
    out: list[tuple[int, str]] = []

    def report(node: ast.AST, what: str) -> None:
        out.append((node.lineno, f"{filename}:{node.lineno}: {what}"))

    def other_side(e: ast.expr) -> str | None:
        names = _literal_names(e)
        if names:
            return "op name literal " + ", ".join(repr(n) for n in names)
        ref = _table_ref(e, local, imported)
        return f"op-name table {ref}" if ref else None

    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            left = node.left
            for cmp, right in zip(node.ops, node.comparators):
                if isinstance(cmp, (ast.Eq, ast.NotEq, ast.In, ast.NotIn, ast.Is, ast.IsNot)):
                    for a, b in ((left, right), (right, left)):
                        what = _is_op_side(a) and other_side(b)
                        if what:
                            report(node, f"compares {ast.unparse(a)} with {what}")
                            break
                left = right
        elif isinstance(node, ast.Subscript) and _is_op_side(node.slice):
            ref = _table_ref(node.value, local, imported) or (
                "literal" if _literal_names(node.value) else None)
            if ref:
                report(node, f"looks {ast.unparse(node.slice)} up in op-name table {ref}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in ("get", "__contains__", "setdefault", "pop") \
                and node.args and _is_op_side(node.args[0]):
            ref = _table_ref(node.func.value, local, imported) or (
                "literal" if _literal_names(node.func.value) else None)
            if ref:
                report(node, f"looks {ast.unparse(node.args[0])} up in op-name table {ref}")
        elif isinstance(node, ast.Match) and _is_op_side(node.subject):
            for case in node.cases:
                for pat in ast.walk(case.pattern):
                    if isinstance(pat, ast.MatchValue) and _literal_names(pat.value):
                        report(pat, f"matches {ast.unparse(node.subject)} against "
                                    f"{ast.unparse(pat.value)}")
    return [message for _, message in sorted(out, key=lambda o: o[0])]


def lint(root: Path = ROOT) -> list[str]:
    """Offences in every non-exempt module under `root` (the codesign package, or a tree laid
    out like it); tables are looked up in every module, exempt ones included."""
    modules = _modules(root)
    trees = {p: ast.parse(p.read_text(), str(p)) for p in modules}
    tables = {modules[p]: _tables(t) for p, t in trees.items()}
    out: list[str] = []
    for path, module in modules.items():
        rel = path.relative_to(root).as_posix()
        if not rel.startswith(EXEMPT):
            out += offences_in(path.read_text(), f"codesign/{rel}", tables, module)
    return out


def test_no_op_name_decisions():
    offences = lint()
    assert not offences, (f"{len(offences)} decision(s) on an op's name; ask get_op(...).template / "
                          f".traits / .kind / .identity or the structure, or compare with the OpDef "
                          f"its module exports:\n" + "\n".join(offences))


# -- the lint itself -----------------------------------------------------------------------
PLANTED = textwrap.dedent('''
    from codesign.ir.ops import get_op
    _TABLE = frozenset({"pad", "concat"})
    _NEUTRAL = {"mul": 1, "add": 0}

    class P:
        ops = frozenset({"reshape"})
        def f(self, node, op, op_name):
            if node.op == "reshape":                     # <-
                pass
            if "index" == node.op or node.op in ("gather", "embedding"):  # <- <-
                pass
            if node.op not in _TABLE:                    # <-
                pass
            x = _NEUTRAL[node.op]                        # <-
            y = _NEUTRAL.get(op)                         # <-
            if op_name != "softmax":                     # <-
                pass
            if node.op in self.ops:                      # <-
                pass
            if get_op(node.op).name == "matmul":         # <-
                pass
            match node.op:
                case "linear":                           # <-
                    pass
            if node.op in frozenset({"full", "iota"}):   # <-
                pass
''')

LEGITIMATE = textwrap.dedent('''
    from codesign.ir.ops import OpKind, get_op
    from codesign.ir.ops.registry import Template, Trait

    def f(node, target, attrs, t, op):
        if target.kind == "gpu" or t.dtype == "f32" or attrs["mode"] == "mean":
            pass
        if node.name == "add" or "reshape" in node.attrs:  # a value called %add; an attr key
            pass
        if get_op(node.op).template is Template.gemm or op.kind is OpKind.gather:
            pass
        if node.op == other_node.op or node.op in names:   # no literal: not a name table
            pass
        if node.op == "not_an_op" or kind == "attention":  # not an op; not the op side
            pass
        if Trait.may_read_outside in get_op(node.op).traits:
            pass
        rows = {"mul": 1}["mul"]                           # a table, but not looked up by op
        kinds = ("gpu", "cpu")
        if node.op in kinds:                               # a table of no op names
            pass
''')


def test_lint_flags_planted_offences():
    """Every line marked `# <-` is reported, once per arrow, with file:line; nothing else."""
    offences = offences_in(PLANTED, "planted.py")
    expected = [f"planted.py:{i}" for i, line in enumerate(PLANTED.splitlines(), 1)
                for _ in range(line.count("<-"))]
    assert [o.rsplit(":", 1)[0] for o in offences] == expected, offences


def test_lint_ignores_legitimate_uses():
    assert offences_in(LEGITIMATE, "legit.py") == []


def test_lint_follows_imported_tables(tmp_path):
    pkg = tmp_path / "codesign"
    (pkg / "ir" / "ops").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "ir" / "__init__.py").write_text("")
    (pkg / "ir" / "ops" / "__init__.py").write_text("")
    (pkg / "ir" / "ops" / "source.py").write_text('SOURCE_OPS = frozenset({"full", "iota"})\n')
    (pkg / "use.py").write_text("from codesign.ir.ops.source import SOURCE_OPS\n\n"
                                "def f(n):\n    return n.op in SOURCE_OPS\n")
    offences = lint(pkg)
    assert offences == ["codesign/use.py:4: compares n.op with op-name table "
                        "codesign.ir.ops.source.SOURCE_OPS"], offences

