"""parse_brief: what a submitted brief may look like, and the one clear message when it does not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sagad.content.brief import MAX_BRIEF_BYTES, Brief, parse_brief
from sagad.errors import InvalidBrief

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def valid_brief(**changes: Any) -> dict[str, Any]:
    """The shipped example brief, with some fields replaced."""
    brief: dict[str, Any] = json.loads((EXAMPLES / "brief.json").read_bytes())
    brief.update(changes)
    return brief


def encoded(brief: Any) -> bytes:
    return json.dumps(brief).encode()


def rejection(data: bytes) -> str:
    """The message parse_brief gives for ``data``, which it must reject."""
    with pytest.raises(InvalidBrief) as caught:
        parse_brief(data)
    return str(caught.value)


@pytest.mark.parametrize("name", ["brief.json", "brief_qc_fail.json", "brief_delivery_fail.json"])
def test_example_briefs_parse_to_the_brief_and_its_json(name: str) -> None:
    data = (EXAMPLES / name).read_bytes()
    brief, raw = parse_brief(data)
    assert isinstance(brief, Brief)
    assert raw == json.loads(data)
    assert brief.model_dump() == raw


def test_invalid_example_names_every_broken_field() -> None:
    message = rejection((EXAMPLES / "brief_invalid.json").read_bytes())
    assert "'budget_eur'" in message
    assert "'delivery.target'" in message
    assert "\n" not in message


def test_malformed_json_says_line_and_column() -> None:
    message = rejection(b'{\n  "client": "Acme",\n  oops\n}')
    assert "not valid JSON" in message
    assert "line 3 column 3" in message


def test_empty_input_is_malformed_json() -> None:
    assert "line 1 column 1" in rejection(b"")


@pytest.mark.parametrize(
    ("data", "kind"),
    [(b"[1, 2]", "list"), (b"42", "int"), (b'"a brief"', "str"), (b"null", "NoneType"), (b"true", "bool")],
)
def test_json_that_is_not_an_object_is_rejected(data: bytes, kind: str) -> None:
    assert rejection(data) == f"brief must be a JSON object, not {kind}"


def test_missing_required_field_is_named() -> None:
    brief = valid_brief()
    del brief["product"]
    assert rejection(encoded(brief)) == "field 'product': Field required"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("budget_eur", "12000"),  # a numeric string is no int
        ("budget_eur", True),  # nor is a bool
        ("budget_eur", 12000.0),  # nor a whole float
        ("word_limit", "400"),
        ("product", 5),  # an int is no string
        ("channels", "email"),  # a string is no list
        ("goals", {"awareness": 1}),
        ("delivery", "cms"),
    ],
)
def test_wrong_types_are_rejected_strictly(field: str, value: Any) -> None:
    message = rejection(encoded(valid_brief(**{field: value})))
    assert message.startswith(f"field '{field}': ")


def test_unknown_extra_field_is_named() -> None:
    message = rejection(encoded(valid_brief(colour="red")))
    assert message == "field 'colour': Extra inputs are not permitted"


def test_unknown_nested_field_is_named_with_its_path() -> None:
    brief = valid_brief(delivery={"target": "cms", "destination": "acme/blog", "retries": 3})
    assert rejection(encoded(brief)).startswith("field 'delivery.retries': ")


def test_nested_wrong_field_is_named_with_its_path() -> None:
    brief = valid_brief(delivery={"target": "fax", "destination": "acme"})
    message = rejection(encoded(brief))
    assert message.startswith("field 'delivery.target': ")
    assert "'cms', 'email' or 'social'" in message


def test_missing_nested_field_is_named_with_its_path() -> None:
    brief = valid_brief(delivery={"target": "cms"})
    assert rejection(encoded(brief)) == "field 'delivery.destination': Field required"


def test_list_item_errors_name_the_index() -> None:
    assert rejection(encoded(valid_brief(channels=["email", 3]))).startswith("field 'channels[1]': ")
    assert rejection(encoded(valid_brief(goals=["awareness", "", "sales"]))).startswith("field 'goals[1]': ")


def test_every_broken_field_is_named_in_one_line() -> None:
    brief = valid_brief(word_limit=10, tone="", channels=[])
    del brief["client"]
    message = rejection(encoded(brief))
    for field in ("client", "tone", "channels", "word_limit"):
        assert f"field '{field}'" in message
    assert "\n" not in message


def test_oversized_input_is_rejected_before_decoding_or_parsing() -> None:
    # Neither UTF-8 nor JSON: only a size check that runs first can give the size message.
    message = rejection(b"\xff" * (MAX_BRIEF_BYTES + 1))
    assert message == f"brief is {MAX_BRIEF_BYTES + 1} bytes, over the {MAX_BRIEF_BYTES}-byte limit"


def test_brief_of_exactly_the_size_limit_is_accepted() -> None:
    data = encoded(valid_brief())
    data += b" " * (MAX_BRIEF_BYTES - len(data))
    assert len(data) == MAX_BRIEF_BYTES
    brief, _ = parse_brief(data)
    assert brief.product == "Trailblazer running shoes"


def test_non_utf8_bytes_are_named_with_their_offset() -> None:
    data = b'{"client": "Caf\xe9"}'
    assert rejection(data) == "brief is not UTF-8 text: byte 0xe9 at offset 15"


def test_utf8_text_beyond_ascii_is_accepted() -> None:
    brief, raw = parse_brief(encoded(valid_brief(client="Café Œuvre 東京")))
    assert brief.client == "Café Œuvre 東京"
    assert raw["client"] == "Café Œuvre 東京"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("client", "Acme\x00"),
        ("key_message", "\x00"),
        ("goals", ["aware\x00ness"]),
        ("delivery", {"target": "cms", "destination": "a\x00"}),
    ],
)
def test_nul_character_which_postgresql_cannot_store_is_rejected_naming_the_field(field: str, value: Any) -> None:
    message = rejection(encoded(valid_brief(**{field: value})))
    assert message.startswith(f"field '{field}")
    assert "NUL" in message


def test_hundred_thousand_nested_lists_are_an_invalid_brief() -> None:
    depth = 100_000
    message = rejection(b"[" * depth + b"]" * depth)
    assert "limit" in message


def test_nesting_deeper_than_the_parser_allows_but_within_the_size_limit_is_an_invalid_brief() -> None:
    depth = MAX_BRIEF_BYTES // 2 - 100
    assert rejection(b"[" * depth + b"]" * depth) == "brief is nested too deeply"
    assert rejection(b'{"a":' * (depth // 3) + b"1" + b"}" * (depth // 3)) == "brief is nested too deeply"


def test_nested_value_in_a_field_is_a_type_error_of_that_field() -> None:
    nested: Any = "awareness"
    for _ in range(500):
        nested = [nested]
    assert rejection(encoded(valid_brief(goals=nested))).startswith("field 'goals[0]': ")


def test_integer_with_more_digits_than_python_converts_is_an_invalid_brief() -> None:
    # json.loads raises a plain ValueError here (int_max_str_digits), not a JSONDecodeError.
    data = b'{"budget_eur": ' + b"9" * 5000 + b"}"
    assert rejection(data).startswith("brief is not valid JSON: ")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("word_limit", 49),
        ("word_limit", 5001),
        ("budget_eur", -1),
        ("budget_eur", 100_000_001),
        ("channels", []),
        ("channels", ["email"] * 11),
        ("goals", []),
        ("goals", ["awareness"] * 11),
        ("client", ""),
        ("product", ""),
        ("audience", ""),
        ("key_message", ""),
        ("tone", ""),
        ("client", "x" * 201),
        ("key_message", "x" * 2001),
        ("tone", "x" * 41),
        ("channels", ["x" * 41]),
    ],
)
def test_values_out_of_bounds_are_rejected(field: str, value: Any) -> None:
    message = rejection(encoded(valid_brief(**{field: value})))
    assert message.startswith(f"field '{field}")


def test_empty_delivery_destination_is_rejected() -> None:
    brief = valid_brief(delivery={"target": "cms", "destination": ""})
    assert rejection(encoded(brief)).startswith("field 'delivery.destination': ")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("word_limit", 50),
        ("word_limit", 5000),
        ("budget_eur", 0),
        ("budget_eur", 100_000_000),
        ("channels", ["email"] * 10),
        ("goals", ["awareness"] * 10),
        ("client", "x"),
        ("client", "x" * 200),
        ("key_message", "x" * 2000),
        ("tone", "x" * 40),
    ],
)
def test_values_at_the_bounds_are_accepted(field: str, value: Any) -> None:
    brief, raw = parse_brief(encoded(valid_brief(**{field: value})))
    assert getattr(brief, field) == value
    assert raw[field] == value
