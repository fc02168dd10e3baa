"""Go text conventions: %q quoting and json.Marshal escapes."""

from __future__ import annotations

import pytest

from noemafed.gotext import go_json_dumps, go_quote


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("mirror", '"mirror"'),
        ("", '""'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("tab\there\nnew", '"tab\\there\\nnew"'),
        ("\x00\x7f", '"\\x00\\x7f"'),
        ("café ⚠ 日本", '"café ⚠ 日本"'),
        ("\u200b", '"\\u200b"'),
        ("\U000e0001", '"\\U000e0001"'),
    ],
)
def test_go_quote(text: str, quoted: str) -> None:
    assert go_quote(text) == quoted


def test_go_json_escapes_html_and_line_separators() -> None:
    assert go_json_dumps({"b": "<a & b>", "a": "x\u2028y\u2029é"}) == (
        '{"b":"\\u003ca \\u0026 b\\u003e","a":"x\\u2028y\\u2029é"}'
    )
