"""Go text conventions: %q quoting and json.Marshal escapes."""

from __future__ import annotations

import pytest

from noemafed.text.gotext import go_json_dumps, go_quote


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("beta", '"beta"'),
        ("", '""'),
        ('a"b\\c', '"a\\"b\\\\c"'),
        ("tab\there\nnl", '"tab\\there\\nnl"'),
        ("\a\b\f\r\v", '"\\a\\b\\f\\r\\v"'),
        ("\x00\x1b\x7f", '"\\x00\\x1b\\x7f"'),
        ("café 日本 😀", '"café 日本 😀"'),
        ("nbsp\u00a0", '"nbsp\\u00a0"'),
        ("zwsp\u200b", '"zwsp\\u200b"'),
        ("\U000e0001", '"\\U000e0001"'),
    ],
)
def test_go_quote(text: str, quoted: str) -> None:
    assert go_quote(text) == quoted


def test_go_json_escapes_html_and_line_separators() -> None:
    assert go_json_dumps({"b": "<a & b>", "a": "x\u2028y\u2029é"}) == (
        '{"b":"\\u003ca \\u0026 b\\u003e","a":"x\\u2028y\\u2029é"}'
    )
