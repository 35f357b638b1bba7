"""The pure parts of fetching: JSON bodies to `namespace.field` variables."""

from __future__ import annotations

from typing import Any

import pytest

from resc.fetch.client import flatten, objects_of, parse_json

BIG = "1234567890123456789012345678901234567890"


def test_parse_json_keeps_integers_exactly() -> None:
    body = f'{{"id": 634876914, "big": {BIG}, "neg": -7}}'.encode()

    assert parse_json(body) == {"id": "634876914", "big": BIG, "neg": "-7"}


def test_parse_json_renders_floats_as_json_writes_them() -> None:
    assert parse_json(b"[1.5, 2.0, 1E2, 1e400]") == ["1.5", "2.0", "100.0", "1e400"]


@pytest.mark.parametrize("body", [b"NaN", b'{"a": Infinity}', b"[-Infinity]"])
def test_parse_json_rejects_non_json_constants(body: bytes) -> None:
    with pytest.raises(ValueError, match=r"^-?(NaN|Infinity) is not JSON$"):
        parse_json(body)


def test_parse_json_rejects_deep_nesting_with_value_error() -> None:
    with pytest.raises(ValueError, match=r"^nested too deeply$"):
        parse_json(b"[" * 100_000)


@pytest.mark.parametrize("body", [b"", b"{", b"\xff", b'{"a": 1} x'])
def test_parse_json_rejects_invalid_bodies_with_value_error(body: bytes) -> None:
    with pytest.raises(ValueError):
        parse_json(body)


def test_flatten_names_fields_after_the_namespace() -> None:
    data = parse_json(
        '{"s": "Zü", "n": 3, "f": 1.5, "t": true, "no": false, "z": null, '
        '"o": {"a": {"b": "deep"}, "c": 1}, "arr": [1, 2], "objs": [{"x": 1}]}'.encode()
    )

    assert flatten(data, "db") == {
        "db.s": "Zü".encode(),
        "db.n": b"3",
        "db.f": b"1.5",
        "db.t": b"true",
        "db.no": b"false",
        "db.z": b"null",
        "db.o.a.b": b"deep",
        "db.o.c": b"1",
    }


@pytest.mark.parametrize(
    ("data", "objects"),
    [
        ({"a": "1"}, [{"a": "1"}]),
        ([{"a": "1"}, {"b": "2"}], [{"a": "1"}, {"b": "2"}]),
        ([], []),
    ],
)
def test_objects_of_accepts_an_object_or_an_array_of_objects(data: Any, objects: Any) -> None:
    assert objects_of(data) == objects


@pytest.mark.parametrize("data", [["1", "2"], [{"a": "1"}, "2"], "3", "x", None])
def test_objects_of_rejects_anything_else(data: Any) -> None:
    with pytest.raises(ValueError, match=r"^expected a JSON object or an array of objects$"):
        objects_of(data)


@pytest.mark.parametrize(
    ("literal", "rendered"),
    [("1e-7", "1e-7"), ("1e20", "1e20"), ("2.5e-300", "2.5e-300"), ("1E+3", "1000.0")],
)
def test_floats_with_exponents_are_written_as_json_writes_them(literal, rendered):
    assert parse_json(f"[{literal}]".encode()) == [rendered]
