"""Parser fuzzing: any text either parses to a Graph or raises ParseError with a line and a
column inside the text and a message — never another exception. Plus targeted malformed
inputs whose line:col and message are pinned down."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codesign.ir import Graph, ParseError, diagnose, load_graph, parse_graph, print_graph

VALID = [
    """graph @mlp(%x: f32[4,16], %fc1.weight: f32[32,16] param, %b: f32[32] param "model.b") -> (f32[4,32]@sram) {
  %l = linear(%x, %fc1.weight, %b) : f32[4,32] loc("fc1")
  %c = full() {value = 0.5} : f32[]
  %m = mul(%l, %c) : f32[4,32]
  %r = gelu(%m) {approximate = "tanh"} : f32[4,32]@sram
  return %r
}
""",
    """graph @z(%x: f32[] const "k\\"q") -> (f32[]@sram, i64[2]) {
  %z = full() {a = [1, -2, [], [none, true]], b = 1e-05, c = -inf, d = nan, e = "\\u00fc", value = 0} : f32[]@sram
  %i = iota() {start = -1, step = 2.5} : i64[2]
  return %z, %i
}
""",
    """graph @moe(%x: f32[6,8], %r: f32[4,8] param, %w: f32[4,8,8] param) -> (f32[6,8]) {
  %m = moe(%x, %r, %w) {num_experts = 4, top_k = 2} : f32[6,8] loc("moe") ({
    graph @expert(%t: f32[6,8], %a: f32[8,8]) -> (f32[6,8]) {
      %o = linear(%t, %a) : f32[6,8]
      return %o
    }
  })
  return %m
}
""",
]
TOKENS = ["graph", "@g", "%x", "%y", "(", ")", "{", "}", "[", "]", ",", ":", "=", "->", "@", "f32", "i1",
          "param", "return", "loc", '"s"', '"', "1", "-1", "1.5", "1e-05", "nan", "-inf", "none", "true",
          "//", "\n", " ", "relu", "f32[2]", "@sram", "\\", "%", "{a = [", "é", "\t", "0x1", "1.", "-"]


def check(text: str):
    """The parser's contract: a Graph, or a ParseError that points into the text."""
    try:
        g = parse_graph(text)
    except ParseError as exc:
        lines = text.split("\n")
        assert 1 <= exc.line <= len(lines), (exc.line, len(lines))
        assert 1 <= exc.col <= len(lines[exc.line - 1]) + 1, (exc.col, lines[exc.line - 1])
        assert exc.message and isinstance(exc.message, str)
        assert str(exc).startswith(f"<text>:{exc.line}:{exc.col}: error: {exc.message}")
        assert lines[exc.line - 1] in str(exc)  # the offending line is quoted
        return exc
    assert isinstance(g, Graph)
    diags = diagnose(g)  # the verifier must cope with whatever parses
    if all(not d.where.endswith(" return") for d in diags):  # printable: every output has a type
        text2 = print_graph(g)
        assert print_graph(parse_graph(text2)) == text2
    return g


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text(text):
    check(text)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=60).map("".join))
def test_token_soup(text):
    check(text)


@st.composite
def mutated(draw):
    text = draw(st.sampled_from(VALID))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["delete", "insert", "replace", "token", "truncate", "swap"]))
        n = len(text)
        i = draw(st.integers(0, max(n - 1, 0)))
        if kind == "delete":
            j = draw(st.integers(i, min(n, i + 8)))
            text = text[:i] + text[j:]
        elif kind == "insert":
            text = text[:i] + draw(st.text(min_size=1, max_size=3)) + text[i:]
        elif kind == "replace":
            text = text[:i] + draw(st.characters()) + text[i + 1:]
        elif kind == "token":
            text = text[:i] + draw(st.sampled_from(TOKENS)) + text[i:]
        elif kind == "truncate":
            text = text[:i]
        else:
            j = draw(st.integers(0, max(n - 1, 0)))
            if i < j:
                text = text[:i] + text[j] + text[i + 1:j] + text[i] + text[j + 1:]
    return text


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_valid_graphs(text):
    check(text)


@pytest.mark.parametrize("text", VALID)
def test_every_prefix_of_a_valid_graph(text):
    """Truncating anywhere is either still a graph (trailing space) or a located ParseError."""
    for i in range(len(text)):
        result = check(text[:i])
        if isinstance(result, Graph):
            assert text[i:].strip() == ""


@pytest.mark.parametrize("text", VALID)
def test_valid_samples_parse_and_reprint(text):
    assert print_graph(parse_graph(text)) == text


# ---------------------------------------------------------------- targeted errors
GOOD = "graph @g(%x: f32[2]) -> (f32[2]) {\n  %y = relu(%x) : f32[2]\n  return %y\n}\n"


@pytest.mark.parametrize("text,line,col,message", [
    # missing ')' after the operands
    ("graph @g(%x: f32[2]) -> (f32[2]) {\n  %y = relu(%x : f32[2]\n  return %y\n}\n",
     2, 16, "expected ',', got ':'"),
    # missing ')' closing the inputs
    ("graph @g(%x: f32[2] -> (f32[2]) {\n  return %x\n}\n", 1, 21, "expected ',', got '->'"),
    ("graph @g(%x: q32[2]) -> (f32[2]) {\n  return %x\n}\n", 1, 14, "unknown element type 'q32'"),
    ("graph @g(%x: f32[2]) -> (f32[2]) {\n  %y = relu(%x) {a = @b} : f32[2]\n  return %y\n}\n",
     2, 22, "expected an attribute value"),
    ("graph @g(%x: f32[2]) -> (f32[2]) {\n  %y = relu(%x) {a = } : f32[2]\n  return %y\n}\n",
     2, 22, "expected an attribute value (number, string, true, false, none, or [list]), got '}'"),
    ("graph @g(%x: f32[2]) -> (f32[2]) {\n  %y = relu(%x) {a = [1, 2} : f32[2]\n  return %y\n}\n",
     2, 27, "expected ',', got '}'"),
    ("graph @g(%x: f32[2]) -> (f32[2]) {\n  %y = relu(%x) {a = 1, a = 2} : f32[2]\n  return %y\n}\n",
     2, 25, "attribute 'a' given twice"),
    # unterminated string: the quote is not a token at all
    ("graph @g(%x: f32[2]) -> (f32[2]) {\n  %y = relu(%x) : f32[2] loc(\"abc\n  return %y\n}\n",
     2, 30, "unexpected character '\"'"),
    ("graph @g(%x: f32[2]) -> (f32[2]) {\n  %y = relu(%x) : f32[2] loc(\"a\\qb\")\n  return %y\n}\n",
     2, 30, "malformed string literal"),
    ("graph @g(%x: f32[2]) -> (f32[2]) {\n  %y = relu(%x) : f32[2]\n}\n",
     3, 1, "expected a node ('%name = op(...)') or 'return', got '}'"),
    ("graph @g(%x: f32[2]) -> (f32[2]) {\n  %y = relu(%x) : f32[2]\n  return %y\n",
     4, 1, "expected '}', got end of input"),
    ("graph @g(%x: f32[2]) -> (f32[2]) {\n  %y = relu(%x) : f32[2]\n  return",
     3, 9, "expected a value name such as %x, got end of input"),
    ("", 1, 1, "expected 'graph', got end of input"),
    ("graph @g(%x: f32[2, -3]) -> (f32[2]) {\n  return %x\n}\n", 1, 21, "dimension sizes must be non-negative, got -3"),
    ("graph @g(%x: f32[2.5]) -> (f32[2]) {\n  return %x\n}\n", 1, 18, "expected an integer, got '2.5'"),
    (GOOD + "graph @h() -> () {\n}\n", 5, 1, "expected end of input after the graph, got 'graph'"),
    (GOOD + "}", 5, 1, "expected end of input after the graph, got '}'"),
    ("graph @g(%x: f32[2]) -> (f32[2], f32[2]) {\n  return %x\n}\n", 2, 3,
     "graph @g declares 2 results but returns 1 values"),
    ("graph @g(%x: f32[2]) -> () {\n  return %x\n}\n", 2, 3, "graph @g declares 0 results but returns 1 values"),
    ("graph @g(%x: f32[2]) -> (f32[3]) {\n  return %x\n}\n", 1, 26, "declared result type f32[3] but %x is f32[2]"),
    ("graph @g(%x: f32[2]) -> (f32[2]@hbm) {\n  return %x\n}\n", 1, 26,
     "declared result type f32[2]@hbm but %x is f32[2]"),
    ("graph @g(%x: f32[2]) -> (f32[2]) {\n  %y = relu(%x) : f32[2] # comment\n  return %y\n}\n",
     2, 26, "unexpected character '#'"),
    ("graph g(%x: f32[2]) -> (f32[2]) {\n  return %x\n}\n", 1, 7, "expected a graph name such as @main, got 'g'"),
    ("graph @g(x: f32[2]) -> (f32[2]) {\n  return %x\n}\n", 1, 10, "expected a value name such as %x, got 'x'"),
    ("graph @g(%x: f32[2]) -> (f32[2]) {\n  %y = relu(%x) : f32[2] ({\n    return %y\n  })\n  return %y\n}\n",
     3, 5, "expected '}', got 'return'"),
])
def test_malformed_inputs_point_at_the_problem(text, line, col, message):
    exc = check(text)
    assert isinstance(exc, ParseError), "the text should not parse"
    assert (exc.line, exc.col) == (line, col), (exc.line, exc.col, exc.message)
    assert message in exc.message
    caret_line = str(exc).split("\n")[2]
    assert caret_line == "  " + " " * (col - 1) + "^"


def test_huge_integers_and_deep_nesting_are_parse_errors():
    digits = "9" * 5000
    exc = check(f"graph @g(%x: f32[{digits}]) -> (f32[1]) {{\n  return %x\n}}\n")
    assert isinstance(exc, ParseError) and "too long" in exc.message and (exc.line, exc.col) == (1, 18)
    exc = check("graph @g() -> (f32[]) {\n  %a = full() {value = 1, v = " + "[" * 5000 + "]" * 5000 + "} : f32[]\n"
                "  return %a\n}\n")
    assert isinstance(exc, ParseError) and "nesting too deep" in exc.message
    region = "  %y = relu(%x) : f32[2] ({\n graph @r(%x: f32[2]) -> (f32[2]) {\n"
    exc = check("graph @g(%x: f32[2]) -> (f32[2]) {\n" + region * 600)
    assert isinstance(exc, ParseError)
    ok = parse_graph("graph @g() -> (f32[]) {\n  %a = full() {v = " + "[" * 50 + "]" * 50 + ", value = 1} : f32[]\n"
                     "  return %a\n}\n")
    assert print_graph(ok).count("[") == 50 + 2  # and two f32[]


def test_tier_must_touch_the_type():
    # `f32[2]@sram` is a tier; `f32[2] @sram` is a graph name in the wrong place
    exc = check("graph @g(%x: f32[2] @sram) -> (f32[2]) {\n  return %x\n}\n")
    assert isinstance(exc, ParseError) and (exc.line, exc.col) == (1, 21)


def test_load_graph_names_the_file(tmp_path):
    path = tmp_path / "bad.ir"
    path.write_text("graph @g(%x: f32[2]) -> (f32[2]) {\n  %y = relu(%x) : f33[2]\n  return %y\n}\n")
    with pytest.raises(ParseError) as info:
        load_graph(path)
    assert str(info.value).startswith(f"{path}:2:19: error: unknown element type 'f33'")
    assert info.value.filename == str(path)
    good = tmp_path / "good.ir"
    good.write_text(GOOD)
    assert print_graph(load_graph(good)) == GOOD
    with pytest.raises(FileNotFoundError, match="cannot read IR file"):
        load_graph(tmp_path / "missing.ir")


# ---------------------------------------------------------------- bytes, as the CLI reads files
def _mutate_bytes(data: bytes, rng) -> bytes:
    """1-4 seeded byte edits: flip, set to any byte (invalid UTF-8 included), insert, delete,
    duplicate a span, truncate, or splice in a multi-byte / overlong / surrogate sequence."""
    pieces = [b"\xff", b"\xc3", b"\xc3\xa9", b"\xe2\x82", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80",
              b"\x00", b"\r\n", b"9" * 30, b"99999999999999,", b"[", b"]", b"%", b"@", b"\""]
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(data) + 1)
        kind = rng.randrange(7)
        if kind == 0 and i < len(data):
            data[i] ^= 1 << rng.randrange(8)
        elif kind == 1 and i < len(data):
            data[i] = rng.randrange(256)
        elif kind == 2:
            data[i:i] = bytes([rng.randrange(256)])
        elif kind == 3:
            del data[i:i + rng.randint(1, 8)]
        elif kind == 4:
            j = min(len(data), i + rng.randint(1, 16))
            data[i:i] = data[i:j]
        elif kind == 5:
            del data[i:]
        else:
            data[i:i] = rng.choice(pieces)
    return bytes(data)


def test_byte_level_mutations_parse_or_raise_parse_error():
    """1,500 seeded byte mutations of the sample graphs, decoded as `codesign opt` decodes a
    file (`decode_ir`): each parses, or raises ParseError (invalid UTF-8 included), nothing else."""
    import random
    from codesign.ir import decode_ir
    rng = random.Random(20240601)
    samples = [text.encode() for text in VALID + [GOOD]]
    outcomes = {"graph": 0, "decode": 0, "parse": 0}
    for n in range(1500):
        data = _mutate_bytes(samples[n % len(samples)], rng)
        try:
            text = decode_ir(data, "fuzz.csir")
        except ParseError as exc:
            assert "invalid UTF-8 byte" in exc.message and "byte offset" in exc.message
            assert str(exc).startswith(f"fuzz.csir:{exc.line}:{exc.col}: error: ")
            assert exc.line == data.count(b"\n", 0, int(exc.message.split("byte offset ")[1].split()[0])) + 1
            outcomes["decode"] += 1
            continue
        result = check(text)
        outcomes["graph" if isinstance(result, Graph) else "parse"] += 1
    assert all(outcomes.values()), outcomes  # every path was exercised
