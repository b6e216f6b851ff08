"""Parser for the textual IR (the inverse of `printer.print_graph`).

A small tokenizer and a recursive-descent parser. Every syntax problem raises one
`ParseError` naming the file, line and column, with the offending line and a caret —
never a Python traceback from inside. Checking that the graph *means* something (SSA
order, shapes) is the verifier's job, not the parser's.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from codesign.ir.graph import AttrValue, Graph, Group, Input, InputKind, Node
from codesign.ir.plan import GroupPlan, PlanError
from codesign.ir.types import DType, TensorType, size_problem


class ParseError(ValueError):
    def __init__(self, message: str, line: int, col: int, source_line: str, filename: str = "<text>"):
        self.message, self.line, self.col, self.filename = message, line, col, filename
        caret = " " * (col - 1) + "^"
        super().__init__(f"{filename}:{line}:{col}: error: {message}\n  {source_line}\n  {caret}")


@dataclass(frozen=True)
class Token:
    kind: str  # value | global | ident | int | float | string | punct | eof
    text: str
    line: int
    col: int


_TOKEN_RE = re.compile(r"""
    (?P<ws>[ \t\r]+|//[^\n]*)
  | (?P<newline>\n)
  | (?P<value>%[A-Za-z0-9_][A-Za-z0-9_.$]*)
  | (?P<global>@[A-Za-z0-9_][A-Za-z0-9_.$-]*)
  | (?P<float>-?(?:\d+\.\d*(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+))
  | (?P<int>-?\d+)
  | (?P<ident>-?[A-Za-z_][A-Za-z0-9_]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<punct>->|[(){}\[\],:=@])
""", re.VERBOSE)

_NAME = {"value": "a value name such as %x", "global": "a graph name such as @main",
         "ident": "a name", "int": "an integer", "float": "a number", "string": "a quoted string",
         "eof": "end of input"}


class Parser:
    def __init__(self, text: str, filename: str = "<text>"):
        self.text, self.filename = text, filename
        self.lines = text.split("\n")
        self.tokens = self._tokenize()
        self.pos = 0

    # -- tokens ----------------------------------------------------------------------------
    def _tokenize(self) -> list[Token]:
        tokens, line, line_start, pos = [], 1, 0, 0
        while pos < len(self.text):
            m = _TOKEN_RE.match(self.text, pos)
            if m is None:
                col = pos - line_start + 1
                raise self._error(f"unexpected character {self.text[pos]!r}", line, col)
            kind = m.lastgroup
            if kind == "newline":
                line, line_start = line + 1, m.end()
            elif kind != "ws":
                tokens.append(Token(kind, m.group(), line, pos - line_start + 1))
            pos = m.end()
        tokens.append(Token("eof", "", line, pos - line_start + 1))
        return tokens

    def _error(self, message: str, line: int, col: int) -> ParseError:
        source = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        return ParseError(message, line, col, source, self.filename)

    def error_at(self, tok: Token, message: str) -> ParseError:
        return self._error(message, tok.line, tok.col)

    @property
    def peek(self) -> Token:
        return self.tokens[self.pos]

    def next(self) -> Token:
        tok = self.tokens[self.pos]
        if tok.kind != "eof":
            self.pos += 1
        return tok

    def describe(self, tok: Token) -> str:
        return "end of input" if tok.kind == "eof" else repr(tok.text)

    def expect(self, kind: str, text: str | None = None) -> Token:
        tok = self.peek
        if tok.kind != kind or (text is not None and tok.text != text):
            wanted = repr(text) if text is not None else _NAME.get(kind, kind)
            raise self.error_at(tok, f"expected {wanted}, got {self.describe(tok)}")
        return self.next()

    def accept(self, kind: str, text: str | None = None) -> Token | None:
        tok = self.peek
        if tok.kind == kind and (text is None or tok.text == text):
            return self.next()
        return None

    # -- grammar ---------------------------------------------------------------------------
    def parse_module(self) -> Graph:
        graph = self.parse_graph()
        if self.peek.kind != "eof":
            raise self.error_at(self.peek, f"expected end of input after the graph, got {self.describe(self.peek)}")
        return graph

    def parse_graph(self) -> Graph:
        self.expect("ident", "graph")
        name = self.expect("global").text[1:]
        self.expect("punct", "(")
        inputs: list[Input] = []
        if not self.accept("punct", ")"):
            while True:
                inputs.append(self.parse_input())
                if self.accept("punct", ")"):
                    break
                self.expect("punct", ",")
        self.expect("punct", "->")
        self.expect("punct", "(")
        result_types: list[tuple[Token, TensorType]] = []
        if not self.accept("punct", ")"):
            while True:
                result_types.append((self.peek, self.parse_type()))
                if self.accept("punct", ")"):
                    break
                self.expect("punct", ",")
        self.expect("punct", "{")
        groups: list[Group] = []
        while self.peek.kind == "ident" and self.peek.text == "group":
            groups.append(self.parse_group())
        nodes: list[Node] = []
        while not (self.peek.kind == "ident" and self.peek.text == "return"):
            if self.peek.kind != "value":
                raise self.error_at(self.peek, f"expected a node ('%name = op(...)') or 'return', "
                                               f"got {self.describe(self.peek)}")
            nodes.append(self.parse_node())
        return_tok = self.expect("ident", "return")
        outputs = [self.expect("value").text[1:]]
        while self.accept("punct", ","):
            outputs.append(self.expect("value").text[1:])
        self.expect("punct", "}")
        if len(outputs) != len(result_types):
            raise self.error_at(return_tok, f"graph @{name} declares {len(result_types)} results but "
                                            f"returns {len(outputs)} values")
        graph = Graph(name, tuple(inputs), tuple(nodes), tuple(outputs), tuple(groups))
        types = graph.types()
        for (tok, declared), out in zip(result_types, outputs):
            if out in types and types[out] != declared:
                raise self.error_at(tok, f"declared result type {declared} but %{out} is {types[out]}")
        return graph

    def parse_group(self) -> Group:
        self.expect("ident", "group")
        tok = self.expect("int")
        if tok.text.startswith("-"):
            raise self.error_at(tok, f"group ids are non-negative, got {tok.text}")
        where: dict[str, tuple[Token, Token]] = {}
        attrs = self.parse_attr_dict(where)
        try:
            return Group(int(tok.text), GroupPlan.from_attrs(attrs))
        except PlanError as exc:  # the plan's keys are closed: name the key, point at it
            key_tok, value_tok = where[exc.key]
            raise self.error_at(value_tok if exc.in_value else key_tok, str(exc)) from None

    def parse_attr_dict(self, where: dict[str, tuple[Token, Token]] | None = None) -> dict[str, AttrValue]:
        """`{key = value, ...}`; `where` (if given) receives each key's and value's token."""
        attrs: dict[str, AttrValue] = {}
        if self.accept("punct", "{"):
            while True:
                key_tok = self.expect("ident")
                if key_tok.text in attrs:
                    raise self.error_at(key_tok, f"attribute {key_tok.text!r} given twice")
                self.expect("punct", "=")
                if where is not None:
                    where[key_tok.text] = (key_tok, self.peek)
                attrs[key_tok.text] = self.parse_attr()
                if self.accept("punct", "}"):
                    break
                self.expect("punct", ",")
        return attrs

    def parse_input(self) -> Input:
        name = self.expect("value").text[1:]
        self.expect("punct", ":")
        type_ = self.parse_type()
        kind, source = InputKind.input, None
        tok = self.peek
        if tok.kind == "ident" and tok.text in ("param", "buffer", "const"):
            self.next()
            kind = InputKind(tok.text)
            if self.peek.kind == "string":
                source = self.parse_string(self.next())
            else:
                source = name
        return Input(name, type_, kind, source)

    def parse_type(self) -> TensorType:
        tok = self.expect("ident")
        try:
            dtype = DType(tok.text)
        except ValueError:
            raise self.error_at(tok, f"unknown element type {tok.text!r}; expected one of "
                                     f"{', '.join(d.value for d in DType)}") from None
        self.expect("punct", "[")
        shape: list[int] = []
        if not self.accept("punct", "]"):
            while True:
                dim = self.expect("int")
                if dim.text.startswith("-"):
                    raise self.error_at(dim, f"dimension sizes must be non-negative, got {dim.text}")
                shape.append(self.parse_int(dim))
                if self.accept("punct", "]"):
                    break
                self.expect("punct", ",")
        too_large = size_problem(tuple(shape), dtype)
        if too_large is not None:
            raise self.error_at(tok, f"tensor type {dtype.value}[{','.join(map(str, shape))}] is too large: {too_large}")
        tier = None
        if self.accept("punct", "@"):
            tier = self.expect("ident").text
        elif self.peek.kind == "global" and self.peek.col == self.tokens[self.pos - 1].col + 1:
            tier = self.next().text[1:]  # `]@sram` lexes as one global token
        return TensorType(tuple(shape), dtype, tier)

    def parse_node(self) -> Node:
        name = self.expect("value").text[1:]
        self.expect("punct", "=")
        op = self.expect("ident").text
        self.expect("punct", "(")
        operands: list[str] = []
        if not self.accept("punct", ")"):
            while True:
                operands.append(self.expect("value").text[1:])
                if self.accept("punct", ")"):
                    break
                self.expect("punct", ",")
        attrs = self.parse_attr_dict()
        self.expect("punct", ":")
        type_ = self.parse_type()
        group = None
        if self.accept("ident", "group"):
            self.expect("punct", "(")
            tok = self.expect("int")
            if tok.text.startswith("-"):
                raise self.error_at(tok, f"group ids are non-negative, got {tok.text}")
            group = int(tok.text)
            self.expect("punct", ")")
        loc = None
        if self.accept("ident", "loc"):
            self.expect("punct", "(")
            loc = self.parse_string(self.expect("string"))
            self.expect("punct", ")")
        regions: list[Graph] = []
        if self.accept("punct", "("):
            self.expect("punct", "{")
            while self.peek.kind == "ident" and self.peek.text == "graph":
                regions.append(self.parse_graph())
            self.expect("punct", "}")
            self.expect("punct", ")")
        return Node(name, op, tuple(operands), type_, attrs, tuple(regions), loc, group)

    def parse_attr(self) -> AttrValue:
        tok = self.next()
        if tok.kind == "int":
            return self.parse_int(tok)
        if tok.kind == "float":
            return float(tok.text)
        if tok.kind == "string":
            return self.parse_string(tok)
        if tok.kind == "ident":
            named = {"true": True, "false": False, "none": None, "inf": float("inf"),
                     "-inf": float("-inf"), "nan": float("nan"),
                     "-nan": math.copysign(float("nan"), -1.0)}
            if tok.text in named:
                return named[tok.text]
        if tok.kind == "punct" and tok.text == "[":
            items: list[AttrValue] = []
            if not self.accept("punct", "]"):
                while True:
                    items.append(self.parse_attr())
                    if self.accept("punct", "]"):
                        break
                    self.expect("punct", ",")
            return tuple(items)
        raise self.error_at(tok, f"expected an attribute value (number, string, true, false, none, "
                                 f"or [list]), got {self.describe(tok)}")

    def parse_int(self, tok: Token) -> int:
        try:
            return int(tok.text)
        except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
            raise self.error_at(tok, f"integer literal with {len(tok.text)} digits is too long") from None

    def parse_string(self, tok: Token) -> str:
        try:
            return json.loads(tok.text)
        except json.JSONDecodeError:
            raise self.error_at(tok, f"malformed string literal {tok.text}") from None


def parse_graph(text: str, filename: str = "<text>") -> Graph:
    """Parse one graph from text; raises `ParseError` with line and column on bad input."""
    parser = Parser(text, filename)
    try:
        return parser.parse_module()
    except RecursionError:  # attribute lists or regions nested thousands deep
        raise parser.error_at(parser.peek, "nesting too deep") from None


def decode_ir(data: bytes, filename: str = "<text>") -> str:
    """The text of an IR file's bytes, which are UTF-8; an invalid byte is a `ParseError`
    naming the file, its line and column, and its byte offset."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        start = exc.start
        line_start = data.rfind(b"\n", 0, start) + 1
        line_end = data.find(b"\n", start)
        source = data[line_start:line_end if line_end >= 0 else len(data)].decode("utf-8", "replace")
        col = len(data[line_start:start].decode("utf-8")) + 1  # the bytes before `start` are valid
        raise ParseError(f"invalid UTF-8 byte 0x{data[start]:02x} at byte offset {start} ({exc.reason}); "
                         "IR files are UTF-8 text", data.count(b"\n", 0, start) + 1, col, source,
                         filename) from None


def load_graph(path: str | Path) -> Graph:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FileNotFoundError(f"cannot read IR file {path}: {exc.strerror}") from None
    return parse_graph(decode_ir(data, str(path)), str(path))
