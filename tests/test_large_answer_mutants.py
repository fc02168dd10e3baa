"""The large answer's byte path (mcp/large_answer.py), case by case: what its mutation run left alive.

tests/test_large_answer.py holds the properties: whatever the byte path makes of an answer, the whole answer
parsed makes the same. Those cannot tell the byte path from the usual parse, which is also right, so they
never see the byte path give up where it should read (the answer is then decoded whole, at up to 4 bytes a
character, which is what this module exists to avoid). Here each answer must come out of the byte path itself,
with the exact bytes, or with the exact error json.loads words for it.
"""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

import pytest

from noemafed.mcp import large_answer as large_module
from noemafed.mcp.large_answer import large_answer_error, read_large_answer


def _answer(*texts: str) -> bytearray:
    """A tool answer whose content items have these JSON string tokens as their texts, as UTF-8 bytes (an
    encoded surrogate in a token stays as its three bytes, as a peer may send it)."""
    items = ",".join(f'{{"type":"text","text":{text}}}' for text in texts)
    answer = f'{{"jsonrpc":"2.0","id":1,"result":{{"content":[{items}]}}}}'
    return bytearray(answer.encode("utf-8", "surrogatepass"))


def _texts(message: Any) -> list[Any]:
    return [item["text"] for item in message["result"]["content"]]


# ---- \u escapes: pairs, lone surrogates, the characters either side of the surrogate range ---------------


@pytest.mark.parametrize(
    ("token", "page"),
    [
        (r'"\udbff\udfff"', "\U0010ffff"),  # the last pair there is: both ends of both ranges
        (r'"\ud800\udc00"', "\U00010000"),  # the first
        (r'"\ud800\ue000"', "\ufffd\ue000"),  # a high one before the first character past the low range
        (r'"\udc00\udc00"', "\ufffd\ufffd"),  # low ones never start a pair
        (r'"\ud800"', "\ufffd"),  # the first high one, alone at the end
        (r'"\udbff"', "\ufffd"),
        (r'"\udc00x"', "\ufffdx"),
        (r'"\udfff"', "\ufffd"),  # the last low one, alone
        (r'"\ud7ff\ue000"', "\ud7ff\ue000"),  # the characters either side of the range are themselves
        (r'"\ud83d\u0041"', "\ufffdA"),  # a high one before an escape that is no low one
    ],
)
def test_a_wide_escape_is_unescaped_by_the_byte_path(token: str, page: str) -> None:
    """Bug class: a surrogate range bound off by one sent the escape to chr().encode(), whose error made the
    byte path give up (the answer then decoded whole), or paired what does not pair."""
    message = read_large_answer(_answer(token), "surrogatepass")
    assert message is not None, "the byte path gave up"
    assert _texts(message) == [bytearray(page.encode("utf-8", "replace"))]


def test_a_page_that_ends_inside_a_character_is_left_to_the_usual_parse() -> None:
    """The last step must be decoded as final: a lead byte with nothing after it is not UTF-8."""
    before = b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"ab\xc3"}]}}'
    body = bytearray(before)
    assert read_large_answer(body, "surrogatepass") is None
    assert body == before  # untouched, for the usual parse (which refuses it)


@pytest.mark.parametrize(
    "body",
    [
        b'[{"text":"abc"}]',  # no object at the top
        b'"text":"abc"',  # no JSON
        b'{"id":1,"error":{"code":1,"message":"x","text":"abc"}}',  # no result
        b'{"id":1,"result":[{"text":"abc"}]}',  # a result that is no object
        b'{"id":1,"result":{"content":{"text":"abc"}}}',  # content that is no list
    ],
    ids=["array", "not-json", "error", "result-array", "content-object"],
)
def test_a_text_member_that_is_no_tool_results_text_is_left_to_the_usual_parse(body: bytes) -> None:
    """The string after a `"text":` key that is no tool result's text (or no answer at all): the usual parse
    reads it, and looking for it here must not crash."""
    buffer = bytearray(body)
    assert read_large_answer(buffer, "surrogatepass") is None
    assert buffer == bytearray(body)


def test_an_item_that_is_no_object_is_passed_over() -> None:
    message = read_large_answer(
        bytearray(b'{"id":1,"result":{"content":[["text"],{"text":"abc"}]}}'), "strict"
    )
    assert message == {"id": 1, "result": {"content": [["text"], {"text": bytearray(b"abc")}]}}


def test_an_encoded_surrogate_outside_the_page_is_read_as_the_usual_parse_reads_it() -> None:
    """An HTTP body is decoded with surrogatepass, around the page too: an encoded surrogate in the envelope
    (here a second, short item) is a lone surrogate there, as json.loads reads it, not a reason to give up."""
    body = _answer('"page"', '"\ud800"')
    expected = json.loads(bytes(body))
    message = read_large_answer(body, "surrogatepass")
    assert message is not None, "the byte path gave up"
    assert (
        _texts(message)
        == [bytearray(b"page"), expected["result"]["content"][1]["text"]]
        == [
            bytearray(b"page"),
            "\ud800",
        ]
    )


# ---- which string is the page -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tokens", "page_index"),
    [
        (['"a long page"', '"short"'], 0),  # the longest, though it comes first
        (['"ab"', '"abcdefgh"'], 1),  # the longest, though it comes last
        (['"ab"', '"abc"'], 1),  # one character longer is longer (it once had to be two)
        (['"same"', '"size"'], 0),  # of two as long, the first
    ],
)
def test_the_page_is_the_longest_text_string_the_first_of_equals(tokens: list[str], page_index: int) -> None:
    message = read_large_answer(_answer(*tokens), "surrogatepass")
    assert message is not None
    texts = _texts(message)
    assert [isinstance(text, bytearray) for text in texts] == [i == page_index for i in range(len(tokens))]
    assert texts == [
        bytearray(t[1:-1].encode()) if i == page_index else t[1:-1] for i, t in enumerate(tokens)
    ]


@pytest.mark.parametrize(
    ("token", "page"),
    [
        ('""', b""),
        (r'"\"quoted\" first"', b'"quoted" first'),
        (r'"\\"', b"\\"),
        (r'"\u00e9"', "\u00e9".encode()),
    ],
    ids=["empty", "escaped-quote", "backslash", "escape"],
)
def test_a_page_is_read_from_its_first_byte(token: str, page: bytes) -> None:
    """The string starts right after its opening quote: an escape there is an escape, an empty one is empty."""
    message = read_large_answer(_answer(token), "surrogatepass")
    assert message is not None, "the byte path gave up"
    assert _texts(message) == [bytearray(page)]


def test_only_the_first_sixteen_text_members_are_looked_at_and_the_answer_is_still_read() -> None:
    """A peer listing many text members costs at most sixteen looks; past them the page found so far stands."""
    tokens = ['"the page, longest"'] + [f'"{n}"' for n in range(40)]
    message = read_large_answer(_answer(*tokens), "surrogatepass")
    assert message is not None, "the byte path gave up"
    assert _texts(message) == [bytearray(b"the page, longest"), *(str(n) for n in range(40))]


# ---- memory: content is unescaped a step at a time ------------------------------------------------------


def test_the_page_is_unescaped_a_step_at_a_time() -> None:
    """The page's bytes and one step (a str, the scanner's copy and its encoding) are all that is held beside the
    answer. Unescaped in one go, the page would be held three more times (measured: 3.0x the page, 1.4x in steps)."""
    page = ("x" * 99 + "\n") * (8 * 1024 * 1024 // 100)  # escaped as \n: narrow runs with escapes in them
    body = bytearray(json.dumps({"id": 1, "result": {"content": [{"type": "text", "text": page}]}}).encode())
    tracemalloc.start()
    try:
        message = read_large_answer(body, "surrogatepass")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert message is not None
    assert message["result"]["content"][0]["text"] == bytearray(page.encode())
    assert peak < 2 * len(page), f"{peak / len(page):.2f}x the page"


# ---- errors worded without the decoded body -----------------------------------------------------------


def _loads_error(body: bytes) -> str:
    try:
        json.loads(body)
    except (ValueError, RecursionError) as exc:
        return str(exc)
    raise AssertionError("json.loads read it")


@pytest.mark.parametrize(
    "body",
    [
        b"[1,",  # not JSON
        b"\n[",  # a newline at the very start: line 2, column counted from it
        b'\n\n{"a": \xe2\x80\x94}',  # two lines, a wide character before the error
        b"[" * 100_000,  # nested past the parser's stack: its own text, no offset
        b'["\xed\xa0\x80", "\xff"]',  # an encoded surrogate (surrogatepass reads it) before a bad byte
        b'["\xed\xa0\x80\xff"]',
        b'["\xed\xa0\x80"',  # valid UTF-8 as surrogatepass reads it: the JSON is what is wrong
        b'["\xe2\x80"]',  # a character cut short
    ],
    ids=[
        "not-json",
        "leading-newline",
        "wide",
        "deep",
        "surrogate-then-bad-byte",
        "surrogate-bad",
        "surrogate-then-not-json",
        "cut",
    ],
)
def test_a_large_answer_error_is_worded_as_json_loads_words_it(body: bytes) -> None:
    buffer = bytearray(body)
    assert large_answer_error(buffer, "surrogatepass") == _loads_error(body)
    assert buffer == bytearray()  # refused: emptied, so the caller frees the answer at once


def test_a_large_answer_that_parses_is_given_back_whole() -> None:
    body = bytearray('{"a": "\u2014"}'.encode())
    assert large_answer_error(body, "surrogatepass") is None
    assert body == bytearray('{"a": "\u2014"}'.encode())


@pytest.mark.parametrize("body", [b"\xef\xbb\xbf[1,", "[1,".encode("utf-16")])
def test_an_answer_in_another_encoding_is_left_to_the_usual_parse(body: bytes) -> None:
    buffer = bytearray(body)
    assert large_answer_error(buffer, "surrogatepass") is None
    assert buffer == bytearray(body)


def test_sse_data_that_is_not_utf8_is_left_to_the_usual_parse() -> None:
    """SSE data is decoded with replacement there, so a bad byte is no error of its own."""
    buffer = bytearray(b'["\xff"')
    assert large_answer_error(buffer, "strict") is None
    assert buffer == bytearray(b'["\xff"')


def test_a_bad_byte_past_the_first_step_is_found_at_its_offset(monkeypatch: pytest.MonkeyPatch) -> None:
    """Steps of 4 bytes, a wide character cut by a step's end before the bad byte."""
    monkeypatch.setattr(large_module, "_STEP", 4)
    body = '["ab\u2014c\u2014", "x'.encode() + b"\xff" + b'"]'
    assert large_answer_error(bytearray(body), "surrogatepass") == _loads_error(body)
