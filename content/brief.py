"""The client brief: its accepted shape, and how raw input becomes one (or a clear error)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, TypedDict

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from sagad.errors import InvalidBrief

MAX_BRIEF_BYTES = 64 * 1024
_MAX_REPORTED = 10
CHANNELS = ("blog", "email", "search", "social", "video")
"""The channels the pipeline can produce for; a brief naming another fails at normalize_brief."""


def _storable(text: str) -> str:
    if not text.strip():
        raise ValueError("is blank")
    if "\x00" in text:
        raise ValueError("contains a NUL character, which PostgreSQL cannot store")
    return text


Text = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(_storable)]
LongText = Annotated[str, StringConstraints(min_length=1, max_length=2000), AfterValidator(_storable)]
Word = Annotated[str, StringConstraints(min_length=1, max_length=40), AfterValidator(_storable)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Delivery(_Strict):
    """Where the finished package goes."""

    target: Literal["cms", "email", "social"]
    destination: Text


class Brief(_Strict):
    """A client's marketing brief, as submitted."""

    client: Text
    product: Text
    audience: LongText
    key_message: LongText
    tone: Word
    goals: Annotated[list[Word], Field(min_length=1, max_length=10)]
    channels: Annotated[list[Word], Field(min_length=1, max_length=10)]
    budget_eur: Annotated[int, Field(ge=0, le=100_000_000)]
    word_limit: Annotated[int, Field(ge=50, le=5000)]
    delivery: Delivery


class DeliveryData(TypedDict):
    target: str
    destination: str


class BriefData(TypedDict):
    """A brief as JSON, the way steps after ``normalize_brief`` get it (its output)."""

    client: str
    product: str
    audience: str
    key_message: str
    tone: str
    goals: list[str]
    channels: list[str]
    budget_eur: int
    word_limit: int
    delivery: DeliveryData


def _field(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def describe(error: ValidationError) -> str:
    """One line per broken field, each naming the field."""
    lines = []
    errors = error.errors(include_url=False)
    for item in errors[:_MAX_REPORTED]:
        # json.dumps escapes line breaks and control characters in field names taken from the input.
        where = json.dumps(_field(tuple(item["loc"])))[1:-1]
        lines.append(f"field '{where}': {item['msg']}" if where else f"brief: {item['msg']}")
    if len(errors) > _MAX_REPORTED:
        lines.append(f"and {len(errors) - _MAX_REPORTED} more")
    return "; ".join(lines)


def validate_brief(raw: Any) -> Brief:
    """The brief in ``raw`` (decoded JSON), or InvalidBrief naming every broken field."""
    try:
        return Brief.model_validate(raw)
    except ValidationError as exc:
        raise InvalidBrief(describe(exc)) from None


def load_json(text: str) -> Any:
    """Decode JSON text, or InvalidBrief saying why it cannot be read."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidBrief(f"brief is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise InvalidBrief("brief is nested too deeply") from None
    except ValueError as exc:  # e.g. an integer past Python's digit limit
        raise InvalidBrief(f"brief is not valid JSON: {exc}") from None


def parse_brief(data: bytes) -> tuple[Brief, Any]:
    """Bytes as submitted become a brief and its JSON value, or InvalidBrief saying what is wrong."""
    if len(data) > MAX_BRIEF_BYTES:
        raise InvalidBrief(f"brief is {len(data)} bytes, over the {MAX_BRIEF_BYTES}-byte limit")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidBrief(f"brief is not UTF-8 text: byte {data[exc.start]:#04x} at offset {exc.start}") from None
    raw = load_json(text)
    if not isinstance(raw, dict):
        raise InvalidBrief(f"brief must be a JSON object, not {type(raw).__name__}")
    return validate_brief(raw), raw
