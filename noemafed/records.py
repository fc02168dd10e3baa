"""`Record`: the base of noemafed's value types, `typing.NamedTuple` as mypy sees it, made without its cost.

`class PeerRun(Record): outcome: str = ""` is a `typing.NamedTuple` to mypy and at run time a
`collections.namedtuple` class with the body's defaults, methods and docstring, as `typing.NamedTuple` makes it.
One step is left out: `typing.NamedTuple` checks every field's annotation as a type, and under
`from __future__ import annotations` each annotation is a string it compiles to do so, some 9 microseconds a
field. The 130 fields `status` defines at start-up cost 1.1 ms of a 37 ms run that way (docs/performance.md,
status); mypy checks the annotations anyway. `__annotations__` keeps the strings.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any

__all__ = ["Record"]

if TYPE_CHECKING:
    from typing import NamedTuple as Record
else:
    # What the class body may not define: namedtuple's own machinery (typing refuses the same names).
    _RESERVED = frozenset(
        {
            "__new__",
            "__init__",
            "__slots__",
            "__getnewargs__",
            "_fields",
            "_field_defaults",
            "_make",
            "_replace",
            "_asdict",
            "_source",
        }
    )
    _NOT_COPIED = frozenset({"__module__", "__annotations__"})

    class _RecordType(type):
        def __new__(mcs, name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> type:
            if not bases:  # Record itself
                return super().__new__(mcs, name, bases, namespace)
            if bases != (Record,):
                raise TypeError(f"{name}: a Record derives from Record alone")
            if "__annotations__" not in namespace and "__annotate__" in namespace:
                # Python 3.14 defers a body's annotations unless the module asks for them as strings.
                raise TypeError(f"{name}: a Record's module needs `from __future__ import annotations`")
            annotations = namespace.get("__annotations__", {})
            with_default = [field for field in annotations if field in namespace]
            if with_default != list(annotations)[len(annotations) - len(with_default) :]:
                raise TypeError(f"{name}: a field without a default follows one with a default")
            made = collections.namedtuple(
                name,
                list(annotations),
                defaults=[namespace[field] for field in with_default],
                module=namespace["__module__"],
            )
            made.__annotations__ = dict(annotations)
            for key, value in namespace.items():
                if key in _RESERVED:
                    raise AttributeError(f"{name}: cannot overwrite the Record attribute {key}")
                if key not in _NOT_COPIED and key not in annotations:
                    setattr(made, key, value)
            return made

    class Record(metaclass=_RecordType):
        """Derive a value type from this as from typing.NamedTuple (see the module's docstring)."""
