"""The YAML subset of cortex.md and trace files: spec examples, pitfalls, errors and round-trip laws."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from noemafed.cortex import frontmatter as fm
from noemafed.cortex.frontmatter import (
    MISSING_DELIMITER,
    UNTERMINATED,
    Plain,
    dumps,
    join_manifest,
    join_trace,
    loads,
    split_manifest,
    split_trace,
)
from noemafed.errors import FrontmatterError

# cortex.md §2.3, as Go's yaml.v3 writes it.
MANIFEST_GO = """\
---
id: 01JQ7X2B9C4D5E6F7G8H9JKMNP
name: research
purpose: Shared research memory for the agents
owner: alice
created: "2025-03-29"
version: 2
access:
    shared_key_file: noema-mcp.key
    tls_cert_path: tls/server.pem
    tls_key_path: tls/server-key.pem
federation:
    mode: sync
    peers:
        - name: laptop
          endpoint: https://laptop.example.lan:8765
          ca: tls/ca.pem
          pubkey: ed25519:9Yc2YyqO0vJ4b1w3xQe8l6hS7m2Rk5tB1nZp0aWc4dE=
    interval: 30s
    verify: warn
signing:
    public_key: ed25519:0EqyMnQrtKs6E2i9RhXk5tAiSrcaAWuvhSCjMsl3hzc=
    private_key_file: noema-signing.key
---

Notes kept by hand below the manifest survive rewrites.
"""

# The same manifest as serde_yaml writes it: 2-space indent, sequences level with their key, single quotes.
MANIFEST_RUST_YAML = """\
id: 01JQ7X2B9C4D5E6F7G8H9JKMNP
name: research
purpose: Shared research memory for the agents
owner: alice
created: '2025-03-29'
version: 2
access:
  shared_key_file: noema-mcp.key
  tls_cert_path: tls/server.pem
  tls_key_path: tls/server-key.pem
federation:
  mode: sync
  peers:
  - name: laptop
    endpoint: https://laptop.example.lan:8765
    ca: tls/ca.pem
    pubkey: ed25519:9Yc2YyqO0vJ4b1w3xQe8l6hS7m2Rk5tB1nZp0aWc4dE=
  interval: 30s
  verify: warn
signing:
  public_key: ed25519:0EqyMnQrtKs6E2i9RhXk5tAiSrcaAWuvhSCjMsl3hzc=
  private_key_file: noema-signing.key
"""

# cortex.md §5.2.
TRACE = """\
---
id: 20250329-why-we-chose-sqlite
title: Why we chose SQLite
type: decision
tier: mid
author: research-agent-1
tags:
    - architecture
    - storage
origin: research
created: "2025-03-29T14:23:00Z"
updated: "2025-03-30T09:05:12Z"
content_hash: sha256:404daf7faab0a7609fe6eb21983b239f4fd0fedbb2bd243a69b7cd24c5659013
---

We index traces in SQLite (WAL mode) because it is embedded and needs no server.

Revisited: still right for the index & event log.
"""


def shape(value: Any) -> Any:
    """Make the Plain/str distinction visible to ==, which a str subclass alone is not."""
    if isinstance(value, dict):
        return {("key", type(key).__name__, key): shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value]
    if isinstance(value, Plain):
        return ("plain", str(value))
    if isinstance(value, str):
        return ("str", value)
    raise AssertionError(f"unexpected {type(value).__name__}")


def expected_manifest() -> dict[str, Any]:
    """The §2.3 manifest as loads must return it: quoted date as str, everything unquoted as Plain."""
    p = Plain
    return {
        "id": p("01JQ7X2B9C4D5E6F7G8H9JKMNP"),
        "name": p("research"),
        "purpose": p("Shared research memory for the agents"),
        "owner": p("alice"),
        "created": "2025-03-29",
        "version": p("2"),
        "access": {
            "shared_key_file": p("noema-mcp.key"),
            "tls_cert_path": p("tls/server.pem"),
            "tls_key_path": p("tls/server-key.pem"),
        },
        "federation": {
            "mode": p("sync"),
            "peers": [
                {
                    "name": p("laptop"),
                    "endpoint": p("https://laptop.example.lan:8765"),
                    "ca": p("tls/ca.pem"),
                    "pubkey": p("ed25519:9Yc2YyqO0vJ4b1w3xQe8l6hS7m2Rk5tB1nZp0aWc4dE="),
                }
            ],
            "interval": p("30s"),
            "verify": p("warn"),
        },
        "signing": {
            "public_key": p("ed25519:0EqyMnQrtKs6E2i9RhXk5tAiSrcaAWuvhSCjMsl3hzc="),
            "private_key_file": p("noema-signing.key"),
        },
    }


# --- spec examples ---------------------------------------------------------------------------------------------


def test_go_manifest_example_parses_to_text_values() -> None:
    yaml_text, body = split_manifest(MANIFEST_GO)
    assert body == "Notes kept by hand below the manifest survive rewrites.\n"
    assert shape(loads(yaml_text)) == shape(expected_manifest())


def test_rust_style_manifest_equals_go_style() -> None:
    go_yaml, _ = split_manifest(MANIFEST_GO)
    assert shape(loads(MANIFEST_RUST_YAML)) == shape(loads(go_yaml))


def test_go_manifest_dumps_back_byte_for_byte() -> None:
    yaml_text, body = split_manifest(MANIFEST_GO)
    assert join_manifest(dumps(loads(yaml_text)), body) == MANIFEST_GO


def test_rust_manifest_dumps_in_go_style() -> None:
    go_yaml, _ = split_manifest(MANIFEST_GO)
    assert dumps(loads(MANIFEST_RUST_YAML)) == go_yaml


def test_trace_example() -> None:
    yaml_text, body = split_trace(TRACE)
    assert body == (
        "We index traces in SQLite (WAL mode) because it is embedded and needs no server.\n\n"
        "Revisited: still right for the index & event log.\n"
    )
    trace = loads(yaml_text)
    assert list(trace) == [
        "id",
        "title",
        "type",
        "tier",
        "author",
        "tags",
        "origin",
        "created",
        "updated",
        "content_hash",
    ]
    assert shape(trace["tags"]) == [("plain", "architecture"), ("plain", "storage")]
    assert shape(trace["created"]) == ("str", "2025-03-29T14:23:00Z")
    assert shape(trace["title"]) == ("plain", "Why we chose SQLite")
    assert join_trace(dumps(trace), body) == TRACE


# --- the Python YAML pitfalls (federation.md §1.1, cortex.md §9) -------------------------------------------------


@pytest.mark.parametrize(
    ("yaml_text", "key", "text"),
    [
        ("verify: off\n", "verify", "off"),
        ("verify: on\n", "verify", "on"),
        ("created: 2025-03-29\n", "created", "2025-03-29"),
        ("created: 2025-03-29T14:23:00Z\n", "created", "2025-03-29T14:23:00Z"),
        ("interval: 30\n", "interval", "30"),
        ("version: 2\n", "version", "2"),
        ("enabled: true\n", "enabled", "true"),
        ("weight: 0.5\n", "weight", "0.5"),
        ("cron: 03:00\n", "cron", "03:00"),
        ("nothing: ~\n", "nothing", "~"),
        ("nothing: null\n", "nothing", "null"),
        ("empty:\n", "empty", ""),
        ("empty: # only a comment\n", "empty", ""),
    ],
)
def test_plain_scalars_stay_exact_text(yaml_text: str, key: str, text: str) -> None:
    value = loads(yaml_text)[key]
    assert type(value) is Plain
    assert value == text


@pytest.mark.parametrize("name", ["no", "on", "yes", "off", "y", "n", "NO", "True"])
def test_peer_named_like_a_bool_keeps_its_name(name: str) -> None:
    manifest: Any = loads(
        f"federation:\n    peers:\n        - name: {name}\n          endpoint: https://h:1\n"
    )
    peer = manifest["federation"]["peers"][0]
    assert shape(peer["name"]) == ("plain", name)


@pytest.mark.parametrize("quoted", ['"2025-03-29"', "'2025-03-29'"])
def test_quoted_date_is_str(quoted: str) -> None:
    assert shape(loads(f"created: {quoted}\n")) == {("key", "str", "created"): ("str", "2025-03-29")}


# --- scalars -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("escape", "char"),
    [
        ("\\\\", "\\"),
        ('\\"', '"'),
        ("\\/", "/"),
        ("\\n", "\n"),
        ("\\t", "\t"),
        ("\\\t", "\t"),
        ("\\r", "\r"),
        ("\\0", "\0"),
        ("\\a", "\a"),
        ("\\b", "\b"),
        ("\\f", "\f"),
        ("\\v", "\v"),
        ("\\e", "\x1b"),
        ("\\ ", " "),
        ("\\N", "\x85"),
        ("\\_", "\xa0"),
        ("\\L", "\u2028"),
        ("\\P", "\u2029"),
        ("\\x41", "A"),
        ("\\xe9", "é"),
        ("\\u00e9", "é"),
        ("\\u263A", "\u263a"),
        ("\\U0001F600", "\U0001f600"),
    ],
)
def test_double_quoted_escapes(escape: str, char: str) -> None:
    value = loads(f'k: "a{escape}b"\n')["k"]
    assert type(value) is str
    assert value == f"a{char}b"


@pytest.mark.parametrize(
    ("yaml_text", "text"),
    [
        ("k: 'it''s'\n", "it's"),
        ("k: ''''\n", "'"),
        ("k: ''\n", ""),
        ("k: 'a \"b\" \\n # c'\n", 'a "b" \\n # c'),
        ('k: ""\n', ""),
        ('k: "a # b: c"\n', "a # b: c"),
        ("k: 'x'  # trailing comment\n", "x"),
    ],
)
def test_quoted_scalars(yaml_text: str, text: str) -> None:
    value = loads(yaml_text)["k"]
    assert type(value) is str
    assert value == text


@pytest.mark.parametrize(
    ("yaml_text", "text"),
    [
        ("k: a # comment\n", "a"),
        ("k: a#b\n", "a#b"),
        ("k: a b  \n", "a b"),
        ("k: https://x.example:8765/mcp\n", "https://x.example:8765/mcp"),
        ("k: a:b\n", "a:b"),
        ("k: -5\n", "-5"),
        ('k: it\'s "fine"\n', 'it\'s "fine"'),
        ("k: a # tab\tin comment\n", "a"),
    ],
)
def test_plain_scalars_and_comments(yaml_text: str, text: str) -> None:
    assert shape(loads(yaml_text)["k"]) == ("plain", text)


def test_full_line_comments_and_blank_lines_are_ignored() -> None:
    text = "# head\n\na: 1\n  # indented comment\n\nb:\n    # inside\n    - x\n\n    - y # tail\n# end\n"
    assert shape(loads(text)) == {
        ("key", "str", "a"): ("plain", "1"),
        ("key", "str", "b"): [("plain", "x"), ("plain", "y")],
    }


@pytest.mark.parametrize(
    ("yaml_text", "text"),
    [
        ("k: |\n  one\n  two\n", "one\ntwo\n"),
        ("k: |-\n  one\n  two\n", "one\ntwo"),
        ("k: |+\n  one\n\n\nnext: x\n", "one\n\n\n"),
        ("k: |\n  one\n\n\nnext: x\n", "one\n"),
        ("k: |\n\n  a\n   b\n\n  c\n\n", "\na\n b\n\nc\n"),
        ("k: |\n  # not a comment\n  x\n", "# not a comment\nx\n"),
        ("k: |2-\n    lead\n  x\n", "  lead\nx"),
        ("k: |-2\n    lead\n  x\n", "  lead\nx"),
        ("k: | # comment\n  x\n", "x\n"),
        ("k: |\n  x", "x"),
        ("k: |\nnext: y\n", ""),
        ("k: >\n  one\n  two\n\n  three\n", "one two\nthree\n"),
        ("k: >-\n  one\n    more\n  two\n", "one\n  more\ntwo"),
        ("k: >\n\n  a\n  b\n", "\na b\n"),
        ("k: >+\n  a\n\n", "a\n\n"),
        ("k: |-\n     \n", ""),
        ("k: |+\n   \n\nn: 1\n", "\n\n"),
        ("k: |+\n  x\n\n  ", "x\n\n"),
        ("k: >+\n    ", ""),
        ("k: |\n  a\n     \n", "a\n   \n"),
    ],
)
def test_block_scalars(yaml_text: str, text: str) -> None:
    value = loads(yaml_text)["k"]
    assert type(value) is str
    assert value == text


def test_tabs_are_content_inside_quoted_and_block_scalars() -> None:
    assert loads("a: \"x\ty\"\nb: 'x\ty'\nc: |\n  x\ty\n") == {"a": "x\ty", "b": "x\ty", "c": "x\ty\n"}


def test_block_scalar_in_sequences_and_nested_mappings() -> None:
    text = "a:\n    - |-\n        x\n        y\n    - name: n\n      text: |\n        z\n    - b\nc: d\n"
    assert loads(text) == {"a": ["x\ny", {"name": "n", "text": "z\n"}, "b"], "c": "d"}


def test_block_scalar_ends_at_less_indented_line() -> None:
    assert loads("a: |-\n    x\nb: y\n") == {"a": "x", "b": "y"}


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("k: [a, \"b c\", 'd']\n", [("plain", "a"), ("str", "b c"), ("str", "d")]),
        ("k: [ a , b ]  # comment\n", [("plain", "a"), ("plain", "b")]),
        ("k: [a, b,]\n", [("plain", "a"), ("plain", "b")]),
        ("k: [\"a,b\", 'c]']\n", [("str", "a,b"), ("str", "c]")]),
        ("k: [2025-03-29, off]\n", [("plain", "2025-03-29"), ("plain", "off")]),
        ("k: []\n", []),
        ("k: [ ]\n", []),
    ],
)
def test_flow_sequences(yaml_text: str, expected: list[Any]) -> None:
    assert shape(loads(yaml_text)["k"]) == expected


def test_empty_flow_collections() -> None:
    assert loads("a: []\nb: {}\nc: { }\n") == {"a": [], "b": {}, "c": {}}
    assert loads("{}\n") == {}


def test_empty_documents() -> None:
    assert loads("") == {}
    assert loads("\n# only a comment\n\n") == {}


def test_quoted_keys_and_crlf() -> None:
    assert shape(loads("\"a b\": 1\r\n'c': 2\r\n")) == {
        ("key", "str", "a b"): ("plain", "1"),
        ("key", "str", "c"): ("plain", "2"),
    }


def test_any_consistent_indentation() -> None:
    text = "a:\n   b:\n         c: 1\n   d:\n   - x\n   -   y\n   -\n      e: f\n"
    assert loads(text) == {"a": {"b": {"c": "1"}, "d": ["x", "y", {"e": "f"}]}}


def test_nested_sequences_and_null_items() -> None:
    text = "a:\n  - - x\n    - y\n  -\n  - z\nb:\n"
    assert shape(loads(text)) == {
        ("key", "str", "a"): [[("plain", "x"), ("plain", "y")], ("plain", ""), ("plain", "z")],
        ("key", "str", "b"): ("plain", ""),
    }


def test_serde_yaml_sequence_inside_sequence_item() -> None:
    text = "peers:\n- name: a\n  tags:\n  - x\n  - y\n- name: b\nnext: 1\n"
    assert loads(text) == {"peers": [{"name": "a", "tags": ["x", "y"]}, {"name": "b"}], "next": "1"}


# --- errors ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("yaml_text", "line", "fragment"),
    [
        ("a: 1\nb: &x 2\n", 2, "anchors"),
        ("a: 1\nb: *x\n", 2, "aliases"),
        ("a: !!str 1\n", 1, "tags"),
        ("a:\n  - !tag x\n", 2, "tags"),
        ("a: {b: 1}\n", 1, "flow mappings"),
        ("a: 1\n---\nb: 2\n", 2, "document marker"),
        ("---\na: 1\n", 1, "document marker"),
        ("a: 1\n...\n", 2, "document marker"),
        ("%YAML 1.2\na: 1\n", 1, "directives"),
        ("a:\n\tb: 1\n", 2, "tab character used for indentation"),
        ("a: 1\n  \t\nb: 2\n", 2, "tab character used for indentation"),
        ("a: 1\n\t# c\n", 2, "tab character used for indentation"),
        ("a:\n  -\tb\n", 2, "tab character after '-'"),
        ("a:\tb\n", 1, "tab character after ':'"),
        ("a: \tb\n", 1, "tab character after ':'"),
        ("a: b\tc\n", 1, "tab character in a plain scalar"),
        ("a: b\t# c\n", 1, "tab character in a plain scalar"),
        ("a\tb: c\n", 1, "tab character in a key"),
        ("'a'\t: c\n", 1, "tab character before ':'"),
        ("a: 'b'\t# c\n", 1, "tab character after quoted scalar"),
        ("a: [b,\tc]\n", 1, "tab character in a flow sequence"),
        ("a: |\t# c\n  x\n", 1, "tab character after a block scalar indicator"),
        ("a:\n    b: 1\n  c: 2\n", 3, "unexpected indentation"),
        ("a:\n  - x\n   - y\n", 3, "unexpected indentation"),
        ("a:\n  - name: x\n     e: y\n", 3, "unexpected indentation"),
        ("  a: 1\nb: 2\n", 2, "less indented than the first line"),
        ("a:\n  b: x\n c: y\n", 3, "expected 0 spaces, found 1"),
        ("a: 1\nb: 2\na: 3\n", 3, "duplicate key 'a'"),
        ("p:\n  - name: a\n    name: b\n", 3, "duplicate key 'name'"),
        ("a: 1\njust text\n", 2, "no ':'"),
        ("a: 1\nb #c: 2\n", 2, "no ':'"),
        ('a: 1\nb: "abc\n', 2, "unterminated double-quoted"),
        ("a: 'abc\n", 1, "unterminated single-quoted"),
        ("a: 'abc\n  def'\n", 1, "unterminated single-quoted"),
        ('"a: 1\n', 1, "unterminated double-quoted"),
        ('a: "abc\\\n  def"\n', 1, "escaped line break"),
        ('a: "\\q"\n', 1, "unknown escape"),
        ('a: "\\x4"\n', 1, "hex digits"),
        ('a: "\\uZZZZ"\n', 1, "hex digits"),
        ('a: "\\UFFFFFFFF"\n', 1, "beyond U+10FFFF"),
        ('a: "b" c\n', 1, "unexpected text after quoted scalar"),
        ("a: one\n  two\n", 2, "multi-line plain scalars are not supported"),
        ("a:\n  - one\n    two\n", 3, "multi-line plain scalars are not supported"),
        ("- a\n  b\n", 1, "top level must be a mapping"),
        ("a: b: c\n", 1, "':' followed by a space"),
        ("a: b:\n", 1, "':' followed by a space"),
        ("a: - b\n", 1, "same line as its key"),
        ("a: [b, [c]]\n", 1, "nested flow"),
        ("a: [b, {c}]\n", 1, "nested flow"),
        ("a: [b, c\n", 1, "unterminated flow sequence"),
        ("a: [b, c\n  , d]\n", 1, "unterminated flow sequence"),
        ("a: [b: c]\n", 1, "'key: value' pairs"),
        ("a: [b c d\n", 1, "unterminated flow sequence"),
        ("a: [b,,c]\n", 1, "empty entry"),
        ("a: [b] c\n", 1, "unexpected text after flow sequence"),
        ("? a\n: b\n", 1, "complex keys"),
        (": b\n", 1, "empty key"),
        ("a: 1\n- b\n", 2, "found a sequence item"),
        ("a: |x\n  y\n", 1, "block scalar indicator"),
        ("a: |-\n    first line fixes the indentation\n  less\n", 3, "unexpected indentation"),
        ("a: |\n    \n  x\n", 2, "leading empty line"),
        ("a: @x\n", 1, "reserved"),
        ("a: `x`\n", 1, "reserved"),
        ("a: ,x\n", 1, "','"),
        ("a: 1\rb: 2\n", 1, "carriage return"),
    ],
)
def test_out_of_subset_constructs_name_their_line(yaml_text: str, line: int, fragment: str) -> None:
    with pytest.raises(FrontmatterError) as caught:
        loads(yaml_text)
    assert caught.value.line == line
    assert str(caught.value).startswith(f"line {line}: ")
    assert fragment in str(caught.value)


def test_indentation_error_after_a_deeper_block_does_not_blame_plain_scalars() -> None:
    with pytest.raises(FrontmatterError) as caught:
        loads("a:\n  b: x\n c: y\n")
    assert "multi-line" not in str(caught.value)


def test_absurd_nesting_is_an_error_not_a_crash() -> None:
    text = "".join(" " * depth + "k:\n" for depth in range(3000))
    with pytest.raises(FrontmatterError, match="nesting is too deep"):
        loads(text)


def test_error_line_is_within_the_yaml_text_of_a_manifest() -> None:
    yaml_text, _ = split_manifest("---\nname: x\nverify: &a off\n---\n")
    with pytest.raises(FrontmatterError) as caught:
        loads(yaml_text)
    assert caught.value.line == 2


# --- emitting ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("plain text", "plain text"),
        ("https://x.example:8765/mcp", "https://x.example:8765/mcp"),
        ("ed25519:abc=", "ed25519:abc="),
        ("café", "café"),
        ("", '""'),
        (" lead", '" lead"'),
        ("trail ", '"trail "'),
        ("off", '"off"'),
        ("Off", '"Off"'),
        ("NO", '"NO"'),
        ("y", '"y"'),
        ("True", '"True"'),
        ("null", '"null"'),
        ("Null", '"Null"'),
        ("~", '"~"'),
        ("2", '"2"'),
        ("-3", '"-3"'),
        ("0x1F", '"0x1F"'),
        ("0o17", '"0o17"'),
        ("0755", '"0755"'),
        ("1_000", '"1_000"'),
        ("1e3", '"1e3"'),
        ("0.5", '"0.5"'),
        (".inf", '".inf"'),
        ("-.Inf", '"-.Inf"'),
        (".NaN", '".NaN"'),
        ("2025-03-29", '"2025-03-29"'),
        ("2025-03-29T14:23:00Z", '"2025-03-29T14:23:00Z"'),
        ("1:20", '"1:20"'),
        ("03:00", '"03:00"'),
        ("<<", '"<<"'),
        ("=", '"="'),
        ("a: b", '"a: b"'),
        ("a #b", '"a #b"'),
        ("key:", '"key:"'),
        ("-x", '"-x"'),
        ("#x", '"#x"'),
        ("&x", '"&x"'),
        ("*x", '"*x"'),
        ("!x", '"!x"'),
        ("|x", '"|x"'),
        (">x", '">x"'),
        ("'x", '"\'x"'),
        ('"x', '"\\"x"'),
        ("%x", '"%x"'),
        ("@x", '"@x"'),
        ("`x", '"`x"'),
        ("[x", '"[x"'),
        ("{x", '"{x"'),
        ("?x", '"?x"'),
        (":x", '":x"'),
        (",x", '",x"'),
        ("...", '"..."'),
        ("a\nb", '"a\\nb"'),
        ("tab\there", '"tab\\there"'),
        ("back\\slash", "back\\slash"),
        ("quote\\\n", '"quote\\\\\\n"'),
        ("\x00\x07\x08\x0b\x0c\r\x1b", '"\\0\\a\\b\\v\\f\\r\\e"'),
        ("\x01\x7f\x9f", '"\\x01\\x7f\\x9f"'),
        ("\x85\u2028\u2029", '"\\N\\L\\P"'),
        ("a\ufeffb", '"a\\ufeffb"'),
        ("\ufffe", '"\\ufffe"'),
        ("\ud800", '"\\ud800"'),
        (True, "true"),
        (False, "false"),
        (7, "7"),
        (-3, "-3"),
        ([], "[]"),
        ({}, "{}"),
        (Plain("off"), "off"),
        (Plain("2025-03-29"), "2025-03-29"),
        (Plain("~"), "~"),
        (Plain("-5"), "-5"),
        (Plain("a: b"), '"a: b"'),
        (Plain("#x"), '"#x"'),
        (Plain(" x"), '" x"'),
        (Plain("a\nb"), '"a\\nb"'),
    ],
)
def test_dumps_scalar_quoting(value: Any, written: str) -> None:
    assert dumps({"k": value}) == f"k: {written}\n"


def test_dumps_empty_plain_is_null() -> None:
    assert dumps({"k": Plain(""), "l": [Plain(""), "x"]}) == "k:\nl:\n    -\n    - x\n"


def test_dumps_keys_are_quoted_when_unsafe() -> None:
    assert dumps({"on": "x", "1": "v", "a b": "z", "": "e"}) == '"on": x\n"1": v\na b: z\n"": e\n'


def test_dumps_layout_go_style_and_two_spaces() -> None:
    data: dict[str, Any] = {"a": {"b": ["x", {"c": "1", "d": ["w"]}, ["p", "q"], {}]}, "e": []}
    assert dumps(data) == (
        "a:\n"
        "    b:\n"
        "        - x\n"
        '        - c: "1"\n'
        "          d:\n"
        "              - w\n"
        "        - - p\n"
        "          - q\n"
        "        - {}\n"
        "e: []\n"
    )
    assert loads(dumps(data, indent=2)) == loads(dumps(data))
    assert dumps(data, indent=2).startswith("a:\n  b:\n    - x\n")


def test_dumps_empty_mapping_and_bad_input() -> None:
    assert dumps({}) == "{}\n"
    with pytest.raises(TypeError):
        dumps({"k": 1.5})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        dumps({"k": None})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        dumps({1: "x"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="indent"):
        dumps({"k": "v"}, indent=1)
    assert dumps({"k" * 1024: "v"}) == "k" * 1024 + ": v\n"
    with pytest.raises(ValueError, match="1024"):
        dumps({"k" * 1025: "v"})


# --- round trip of a manifest with keys this tool does not know ----------------------------------------------------

MANIFEST_WITH_UNKNOWN_KEYS = """\
---
id: 01JQ7X2B9C4D5E6F7G8H9JKMNP
name: research
purpose: |-
    Shared research memory.
    Second line: with a colon.
owner: alice
created: "2025-03-29"
version: 2
federation:
    mode: sync
    peers:
        - name: laptop
          endpoint: https://laptop.example.lan:8765
        - name: "no"
          endpoint: https://no.example.lan:8765
          mode: paused
    interval: 30s
    verify: off
watch:
    enabled: true
    debounce_ms: 300
consolidation:
    enabled: false
    cron: "03:00"
    model_tier: large
    graduation:
        enabled: true
        min_age_days: 14
search:
    default_mode: hybrid
    hybrid_weight: 0.5
    extra: [a, "b: c", 'off']
    empty:
---

Hand notes.

Second paragraph.


"""


def test_round_trip_keeps_unknown_keys_types_and_body() -> None:
    yaml_text, body = split_manifest(MANIFEST_WITH_UNKNOWN_KEYS)
    manifest: Any = loads(yaml_text)
    before = shape(manifest)
    new_endpoint = "https://laptop.example.lan:9999"
    manifest["federation"]["peers"][0]["endpoint"] = new_endpoint

    rewritten = join_manifest(dumps(manifest), body)
    yaml_again, body_again = split_manifest(rewritten)
    after = shape(loads(yaml_again))

    assert body_again == "Hand notes.\n\nSecond paragraph.\n"
    peers_key = ("key", "str", "peers")
    federation_key = ("key", "str", "federation")
    endpoint_key = ("key", "str", "endpoint")
    # A str that every loader reads as itself is written unquoted, so it comes back Plain (same text).
    assert after[federation_key][peers_key][0][endpoint_key] == ("plain", new_endpoint)
    before[federation_key][peers_key][0][endpoint_key] = ("plain", new_endpoint)
    assert after == before
    assert list(loads(yaml_again)) == list(manifest)
    reread: Any = loads(yaml_again)
    assert shape(reread["federation"]["verify"]) == ("plain", "off")


def test_needlessly_quoted_str_is_written_plain_and_comes_back_plain() -> None:
    value = loads("k: 'single'\n")["k"]
    assert type(value) is str
    assert dumps({"k": value}) == "k: single\n"
    assert shape(loads(dumps({"k": value}))["k"]) == ("plain", "single")


# --- framing -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "yaml_text", "body"),
    [
        ("---\na: 1\n---\n\nbody\n", "a: 1\n", "body\n"),
        ("---\na: 1\n---\nbody\n", "a: 1\n", "body\n"),
        ("---\na: 1\n---\n\n\nbody\n", "a: 1\n", "\nbody\n"),
        ("---\na: 1\n---\n", "a: 1\n", ""),
        ("---\na: 1\n---", "a: 1\n", ""),
        ("---\r\na: 1\r\n---\r\n\r\nbody\r\n", "a: 1\r\n", "body\r\n"),
        ("a: 1\n", "a: 1\n", ""),
        ("a: 1\n---\nb\n", "a: 1\n---\nb\n", ""),
        ("---\na: 1\n", "---\na: 1\n", ""),
        ("---\na: 1\n--- \n", "---\na: 1\n--- \n", ""),
        ("", "", ""),
    ],
)
def test_split_manifest(text: str, yaml_text: str, body: str) -> None:
    assert split_manifest(text) == (yaml_text, body)


def test_crlf_manifest_parses() -> None:
    crlf = MANIFEST_GO.replace("\n", "\r\n")
    yaml_text, body = split_manifest(crlf)
    assert shape(loads(yaml_text)) == shape(expected_manifest())
    assert body == "Notes kept by hand below the manifest survive rewrites.\r\n"


@pytest.mark.parametrize(
    ("yaml_text", "body", "text"),
    [
        ("a: 1\n", "", "---\na: 1\n---\n"),
        ("a: 1\n", "\n\n", "---\na: 1\n---\n"),
        ("a: 1\n", "notes", "---\na: 1\n---\n\nnotes\n"),
        ("a: 1\n", "notes\n\n\n", "---\na: 1\n---\n\nnotes\n"),
        ("a: 1", "notes\n", "---\na: 1\n---\n\nnotes\n"),
        ("", "", "---\n---\n"),
    ],
)
def test_join_manifest(yaml_text: str, body: str, text: str) -> None:
    assert join_manifest(yaml_text, body) == text


@pytest.mark.parametrize(
    ("text", "yaml_text", "body"),
    [
        ("---\nid: x\n---\n\nbody", "id: x\n", "body"),
        ("---\nid: x\n---\nbody\n", "id: x\n", "body\n"),
        ("---\nid: x\n---\n\n\n  body  \n\n", "id: x\n", "\n  body  \n\n"),
        ("---\nid: x\n---\n", "id: x\n", ""),
        ("---\nid: x\n---\n\n---\nmore\n---\n", "id: x\n", "---\nmore\n---\n"),
    ],
)
def test_split_trace(text: str, yaml_text: str, body: str) -> None:
    assert split_trace(text) == (yaml_text, body)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id: x\n", MISSING_DELIMITER),
        ("---\r\nid: x\r\n---\r\n\r\nbody", MISSING_DELIMITER),
        ("\ufeff---\nid: x\n---\n\nbody", MISSING_DELIMITER),
        (" ---\nid: x\n---\n", MISSING_DELIMITER),
        ("", MISSING_DELIMITER),
        ("---\nid: x\n", UNTERMINATED),
        ("---\nid: x\n---", UNTERMINATED),
        ("---\nid: x\n--- \n", UNTERMINATED),
        ("---\n---\n", UNTERMINATED),
    ],
)
def test_split_trace_errors(text: str, message: str) -> None:
    with pytest.raises(FrontmatterError) as caught:
        split_trace(text)
    assert str(caught.value) == message
    assert caught.value.line is None


def test_join_trace_is_exact() -> None:
    assert join_trace("id: x\n", "body") == "---\nid: x\n---\n\nbody"
    assert join_trace("id: x", "") == "---\nid: x\n---\n\n"


# --- laws --------------------------------------------------------------------------------------------------------

SAFE_KEYS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-. ", min_size=1, max_size=8)
TRICKY_STRINGS = st.sampled_from(
    [
        "",
        " ",
        "off",
        "No",
        "y",
        "~",
        "null",
        "2025-03-29",
        "2025-03-29T14:23:00Z",
        "1:20",
        "0x1F",
        "0o17",
        "1_000",
        "1e3",
        ".inf",
        "-.5",
        " lead",
        "trail ",
        "a: b",
        "a #b",
        "#x",
        "- x",
        "x:",
        "---",
        "...",
        "<<",
        "=",
        "'",
        '"',
        "\\",
        "\n",
        "a\nb\n",
        "\t",
        "\x85",
        "\u2028",
        "\ufeff",
        "\x00",
        "é",
        "\U0001f600",
    ]
)
SAFE_PLAINS = st.sampled_from(
    [
        "",
        "off",
        "on",
        "no",
        "yes",
        "true",
        "~",
        "null",
        "2",
        "30",
        "30s",
        "-5",
        "0.5",
        "2025-03-29",
        "1:20",
        "0x1F",
        ".inf",
        "sync",
        "a b",
        "ed25519:abc=",
        "https://h.example:8765/mcp",
        "it's",
        "-x",
    ]
).map(Plain)
SCALARS = st.one_of(st.text(), TRICKY_STRINGS, SAFE_PLAINS, st.integers(), st.booleans())
VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(SAFE_KEYS, children, max_size=4),
    max_leaves=20,
)
DOCUMENTS = st.dictionaries(SAFE_KEYS, VALUES, max_size=6)


def normalise(value: Any) -> Any:
    """What loads gives back for a dumped value: ints and bools become their plain text."""
    if isinstance(value, bool):
        return Plain("true" if value else "false")
    if isinstance(value, int):
        return Plain(str(value))
    if isinstance(value, dict):
        return {key: normalise(item) for key, item in value.items()}
    if isinstance(value, list):
        return [normalise(item) for item in value]
    return value


def expected_shape(value: Any) -> Any:
    """Shape after a round trip: Plain stays Plain; a str stays str exactly when dumps has to quote it."""
    if isinstance(value, dict):
        return {("key", "str", key): expected_shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [expected_shape(item) for item in value]
    if isinstance(value, str) and not isinstance(value, Plain):
        written_plain = dumps({"k": value}) == f"k: {value}\n"
        return ("plain" if written_plain else "str", value)
    return shape(value)


@given(DOCUMENTS, st.sampled_from([2, 4]))
@settings(max_examples=200)
def test_loads_inverts_dumps_and_keeps_plain_versus_str(document: dict[str, Any], indent: int) -> None:
    again = loads(dumps(document, indent=indent))
    assert again == normalise(document)
    assert shape(again) == expected_shape(normalise(document))


@given(st.one_of(st.text(), TRICKY_STRINGS))
@settings(max_examples=200)
def test_str_needing_quotes_stays_str(text: str) -> None:
    written = dumps({"k": text})
    value = loads(written)["k"]
    assert value == text
    if written != f"k: {text}\n":
        assert type(value) is str
    else:
        assert type(value) is Plain


def assert_same_strings(ours: Any, theirs: Any) -> None:
    """Walk our value and PyYAML's together: structure and every str (not Plain) must match exactly."""
    if isinstance(ours, dict):
        assert isinstance(theirs, dict)
        assert list(theirs) == list(ours)
        for key, item in ours.items():
            assert_same_strings(item, theirs[key])
    elif isinstance(ours, list):
        assert isinstance(theirs, list)
        assert len(theirs) == len(ours)
        for mine, other in zip(ours, theirs, strict=True):
            assert_same_strings(mine, other)
    elif isinstance(ours, str) and not isinstance(ours, Plain):
        assert type(theirs) is str
        assert theirs == ours


@given(DOCUMENTS)
@settings(max_examples=200)
def test_pyyaml_reads_every_str_we_write_as_the_same_str(document: dict[str, Any]) -> None:
    yaml = pytest.importorskip("yaml")
    assert_same_strings(document, yaml.safe_load(dumps(document)))


@given(DOCUMENTS, st.text())
def test_trace_framing_round_trip(document: dict[str, Any], body: str) -> None:
    yaml_text = dumps(document)
    assert split_trace(join_trace(yaml_text, body)) == (yaml_text, body)


@given(DOCUMENTS, st.text())
def test_manifest_framing_round_trip(document: dict[str, Any], body: str) -> None:
    yaml_text = dumps(document)
    trimmed = body.rstrip("\n")
    expected_body = f"{trimmed}\n" if trimmed else ""
    assert split_manifest(join_manifest(yaml_text, body)) == (yaml_text, expected_body)


# The emitter's fast paths must give the same answer as the full rules, always.

_PIECES = st.sampled_from(
    [
        "-", "?", ":", "#", " ", ": ", " #", ":#", "a", "Z", "k", "0", "1", "9", "2025", "-04", "-1", "T12:00",
        "y", "Y", "n", "yes", "No", "on", "OFF", "true", "False", "null", "NULL", "~", "=", "<<", "_", "+",
        ".", "...", "e", "E", "x", "b", "o", "inf", "nan", ".inf", "0x", "0b", "0o", "1e3", "12:30", "1_0",
        "'", '"', "\\", ",", "[", "]", "{", "}", "&", "*", "!", "|", ">", "%", "@", "`",
        "\t", "\n", "\r", "\x00", "\x7f", "\x85", "\xa0", "é", "\u2028", "\u3000", "\ufeff", "\U0001f600",
        "\ud800",
    ]
)  # fmt: skip
_STARTS = st.sampled_from(
    ["", "a", "Yes", "on", "n", "x", "1", "12", "123", "1234", "12345", "20250401", "0"]
)
FAST_PATH_TEXTS = st.one_of(
    st.text(),
    st.lists(_PIECES, max_size=8).map("".join),
    st.tuples(_STARTS, st.sampled_from(["", "-"]), st.lists(_PIECES, max_size=6).map("".join)).map("".join),
    # Near dates and numbers: digit runs, dashes, colons, dots and exponents.
    st.from_regex(r"[0-9]{1,6}(-[0-9]{1,3}){0,2}([-:.eEx_ T][0-9a-zA-Z]{0,3}){0,3}", fullmatch=True),
)


def test_plain_char_pattern_is_exactly_is_plain_char() -> None:
    for codepoint in range(0x110000):
        char = chr(codepoint)
        assert (fm._plain_chars().fullmatch(char) is not None) == fm._is_plain_char(char), hex(codepoint)


@given(FAST_PATH_TEXTS)
@settings(max_examples=2000)
def test_fast_plain_path_agrees_with_the_full_check(text: str) -> None:
    fast = fm._fast_plain().fullmatch(text) is not None
    # The fast path may leave a plain-safe text to the full check, never call an unsafe one plain.
    assert not fast or fm._is_plain_safe_full(text)


@pytest.mark.parametrize(
    "text",
    [
        "20250401-benchmark-trace-1", "Benchmark trace 1", "sha256:ab12", "bench-agent", "a:b", "a#b", "a  b",
        "yesterday", "Nope", "onward", "x-", "1-x", "123-4", "12345-6",
    ],
)  # fmt: skip
def test_fast_plain_path_takes_common_values(text: str) -> None:
    assert fm._fast_plain().fullmatch(text) is not None


@pytest.mark.parametrize(
    "text",
    [
        "", " a", "a ", "-a", "?a", ":a", "#a", "a:", "a: b", "a #b", "yes", "No", "ON", "off", "null", "y",
        "N", "~", "1", "1234-5-6", "2025-04-01T12:00:00Z", "0x1f", "1e3", "12:30", ".5", "...", "a\tb", "é",
    ],
)  # fmt: skip
def test_fast_plain_path_leaves_the_rest_to_the_full_check(text: str) -> None:
    assert fm._fast_plain().fullmatch(text) is None


@given(FAST_PATH_TEXTS)
@settings(max_examples=1000)
def test_double_quoting_fast_path_agrees_with_the_full_escaper(text: str) -> None:
    assert fm._double_quoted(text) == fm._double_quoted_full(text)


# Dates with every kind of tail, so the timestamp fast path meets quotes, backslashes and non-ASCII too.
_DATE_TEXTS = st.tuples(
    st.from_regex(r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}", fullmatch=True),
    st.lists(_PIECES, max_size=5).map("".join),
).map("".join)


@given(st.one_of(FAST_PATH_TEXTS, _DATE_TEXTS))
@settings(max_examples=2000)
def test_format_str_agrees_with_the_full_rules(text: str) -> None:
    full = text if fm._is_plain_safe_full(text) else fm._double_quoted_full(text)
    assert fm.format_str(text) == full
    assert dumps({"k": text}) == f"k: {full}\n"
    assert dumps({"k": [text]}) == f"k:\n    - {full}\n"


@pytest.mark.parametrize("text", ["2025-04-01T12:00:00Z", "2025-4-1", "2025-04-01 12:00:00.5 +02:00"])
def test_timestamps_take_the_quoted_date_fast_path(text: str) -> None:
    assert fm._quoted_as_is_date().fullmatch(text) is not None
    assert fm.format_str(text) == f'"{text}"'
