"""noemafed.records.Record makes what typing.NamedTuple makes, without checking annotations at class creation."""

from __future__ import annotations

import pickle
import typing

import pytest

from noemafed.records import Record


class Sample(Record):
    """A value type as noemafed writes them."""

    name: str
    count: int = 0
    note: str | None = None

    def doubled(self) -> int:
        return self.count * 2


class TypingSample(typing.NamedTuple):
    """A value type as noemafed writes them."""

    name: str
    count: int = 0
    note: str | None = None

    def doubled(self) -> int:
        return self.count * 2


def test_a_record_is_the_named_tuple_typing_makes() -> None:
    ours, theirs = Sample("a", 2), TypingSample("a", 2)
    assert ours == theirs == ("a", 2, None)
    assert repr(ours) == repr(theirs).replace("TypingSample", "Sample")
    assert Sample._fields == TypingSample._fields == ("name", "count", "note")
    assert Sample._field_defaults == TypingSample._field_defaults == {"count": 0, "note": None}
    assert ours.doubled() == theirs.doubled() == 4
    assert ours._replace(note="n") == ("a", 2, "n")
    assert ours._asdict() == theirs._asdict()
    assert Sample.__doc__ == TypingSample.__doc__
    assert (Sample.__module__, Sample.__qualname__) == (__name__, "Sample")
    assert Sample.__mro__ == (Sample, tuple, object)
    assert pickle.loads(pickle.dumps(ours)) == ours  # noqa: S301 (our own bytes)
    with pytest.raises(AttributeError):
        ours.name = "b"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Sample()  # type: ignore[call-arg]


def test_annotations_are_kept_as_written() -> None:
    """Not compiled into ForwardRefs at class creation: that is the cost Record leaves out."""
    assert Sample.__annotations__ == {"name": "str", "count": "int", "note": "str | None"}
    assert typing.get_type_hints(Sample) == {"name": str, "count": int, "note": str | None}


def test_what_typing_refuses_a_record_refuses() -> None:
    with pytest.raises(TypeError, match="without a default follows one with a default"):

        class Misordered(Record):
            first: int = 0
            second: int

    with pytest.raises(AttributeError, match="cannot overwrite the Record attribute _replace"):

        class Overwriting(Record):
            value: int

            def _replace(self) -> None:  # type: ignore[override]
                pass

    with pytest.raises(TypeError, match="derives from Record alone"):

        class Mixed(Record, Exception):  # type: ignore[misc]
            value: int


def test_a_body_whose_annotations_python_deferred_is_refused_not_made_empty() -> None:
    """Python 3.14 gives a class body without `from __future__ import annotations` an `__annotate__` function
    instead of `__annotations__`: a Record made from it would have no fields at all."""
    namespace = {
        "__module__": __name__,
        "__qualname__": "Deferred",
        "__annotate__": lambda _format: {"x": int},
    }
    with pytest.raises(TypeError, match="needs `from __future__ import annotations`"):
        type(Record)("Deferred", (Record,), namespace)
