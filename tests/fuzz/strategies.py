"""Hypothesis strategies for hostile briefs: valid ones with nasty content, and broken ones of every kind."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import strategies as st

from sagad.content.brief import CHANNELS, MAX_BRIEF_BYTES

SQL_PAYLOADS = (
    "'; DROP TABLE workflow_runs; --",
    "Robert'); DELETE FROM onboarding_brief WHERE ('1'='1",
    "' OR '1'='1' --",
    '"; TRUNCATE workflow_runs CASCADE; --',
    "$1::text); DROP TABLE onboarding_brief; --",
    "$$; DROP TABLE workflow_runs; $$",
    "\\'; SELECT pg_sleep(30); --",
    "1; COPY workflow_runs TO STDOUT; --",
    "%s %(client)s {0} {client!r}",
    "E'\\x27'; UPDATE workflow_runs SET status = 'completed'; --",
    "*/ DELETE FROM qc_results; /*",
    "\u02bc; DROP TABLE delivery_packages; --",  # a modifier letter that looks like a quote
)
"""Strings that would do damage if sagad ever spliced a value into SQL text."""

UNICODE_FRAGMENTS = (
    "Café Œuvre 東京",
    "😀👍🏽👨‍👩‍👧",
    "\u202eevil\u202c",
    "z\u0301\u0302\u0303\u0304",
    "\u200b\u200d\ufeff",
    "\x01\x02\x1b[31mred\x1b[0m\x07",
    "tab\there",
    "line\nbreak\r\n",
    "\u2028\u2029\x85",
    "\x7f\x1c\x1d\x1e\x1f",
    "<script>alert(1)</script>",
    "${jndi:ldap://example.invalid/a}",
    "../../etc/passwd",
    "\\\\server\\share",
    "𝕬𝖈𝖒𝖊",
    "İıßﬃ",
    "null",
    "NaN",
    "-0",
    "1e999",
    "\ufffd\uffff",
    "\U0010ffff",
)
FRAGMENTS = SQL_PAYLOADS + UNICODE_FRAGMENTS

# Every code point PostgreSQL can store in text: no NUL, no lone surrogate.
STORABLE_CHARACTERS = st.characters(codec="utf-8", exclude_characters="\x00")
LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
"""What ``str.splitlines`` breaks at."""


def _fitted(text: str, max_size: int) -> str:
    """``text`` cut to ``max_size`` code points and, if blank, given a visible first character."""
    text = text[:max_size]
    return text if text.strip() else ("x" + text)[:max_size]


def _repeated(fragment: str, size: int) -> str:
    return (fragment * (size // len(fragment) + 1))[:size]


def storable_text(max_size: int) -> st.SearchStrategy[str]:
    """Non-blank text of 1 to ``max_size`` characters, hostile but storable, often at its maximum length."""
    piece = st.one_of(st.sampled_from(FRAGMENTS), st.text(STORABLE_CHARACTERS, min_size=1, max_size=12))
    free = st.lists(piece, min_size=1, max_size=4).map("".join)
    longest = st.sampled_from(FRAGMENTS).map(lambda fragment: _repeated(fragment, max_size))
    return st.one_of(free, longest).map(lambda text: _fitted(text, max_size))


def _spelled(channel: str, case: str, pad: str) -> str:
    spelled = {"lower": channel, "upper": channel.upper(), "title": channel.title()}[case]
    return f"{pad}{spelled}{pad}"


KNOWN_CHANNEL = st.builds(
    _spelled, st.sampled_from(CHANNELS), st.sampled_from(["lower", "upper", "title"]), st.sampled_from(["", " ", "\t"])
)
"""A channel of the catalog, spelled the ways normalize_brief accepts (any case, surrounding blanks)."""

CHANNEL_LISTS = st.one_of(
    st.lists(KNOWN_CHANNEL, min_size=1, max_size=10),
    st.lists(st.one_of(KNOWN_CHANNEL, storable_text(40)), min_size=1, max_size=10),
)

VALID_BRIEFS: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {
        "client": storable_text(200),
        "product": storable_text(200),
        "audience": storable_text(2000),
        "key_message": storable_text(2000),
        "tone": storable_text(40),
        "goals": st.lists(storable_text(40), min_size=1, max_size=10),
        "channels": CHANNEL_LISTS,
        "budget_eur": st.one_of(st.integers(0, 100_000_000), st.sampled_from([0, 100_000_000])),
        "word_limit": st.one_of(st.integers(50, 200), st.integers(50, 5000), st.sampled_from([50, 5000])),
        "delivery": st.fixed_dictionaries(
            {"target": st.sampled_from(["cms", "email", "social"]), "destination": storable_text(200)}
        ),
    }
)
"""Briefs of the accepted shape with hostile content; some name an unknown channel or fail QC or delivery."""


class HugeInteger:
    """An integer of more digits than Python's ``int()`` converts from text: written into JSON by ``encoded``."""

    def __init__(self, digits: int) -> None:
        self.digits = digits

    def __repr__(self) -> str:
        return f"HugeInteger({self.digits})"


HUGE_INTEGERS = st.builds(HugeInteger, st.integers(4200, 5200))
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    HUGE_INTEGERS,
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),  # lone surrogates and NUL included
    st.sampled_from(FRAGMENTS),
    st.sampled_from(["\x00", "\ud800", "\udfff", "a\ud83d", " ", "\t\n"]),
    st.builds(_repeated, st.sampled_from(FRAGMENTS), st.sampled_from([40, 41, 200, 201, 2000, 2001, 20_000])),
)
JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    JSON_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.dictionaries(st.text(max_size=10), children, max_size=6),
    ),
    max_leaves=20,
)

FIELDS = (
    *("client", "product", "audience", "key_message", "tone", "goals", "channels", "budget_eur", "word_limit"),
    "delivery",
)
LIST_FIELDS = ("goals", "channels")


def _not_text(value: Any) -> bool:
    return not isinstance(value, str)


def _not_list(value: Any) -> bool:
    return not isinstance(value, list)


def _not_int(value: Any) -> bool:
    return not isinstance(value, int) or isinstance(value, bool)


def _not_dict(value: Any) -> bool:
    return not isinstance(value, dict)


TEXT_LIMITS = {
    **{"client": 200, "product": 200, "audience": 2000, "key_message": 2000, "tone": 40},
    **{"goals[0]": 40, "channels[0]": 40, "delivery.destination": 200},
}


def refused_text(limit: int) -> st.SearchStrategy[Any]:
    """Values a text field of at most ``limit`` characters refuses: other types, blank, NUL, one too many."""
    return st.one_of(
        JSON_VALUES.filter(_not_text),
        st.sampled_from(["", " ", "\t\n\u3000\x1c", "a\x00b"]),
        st.builds(_repeated, st.sampled_from(FRAGMENTS), st.just(limit + 1)),
    )


WRONG_TYPES: dict[str, st.SearchStrategy[Any]] = {
    **{path: refused_text(limit) for path, limit in TEXT_LIMITS.items()},
    **{
        field: st.one_of(JSON_VALUES.filter(_not_list), st.just([]), st.builds(lambda: ["email"] * 11))
        for field in LIST_FIELDS
    },
    "budget_eur": st.one_of(JSON_VALUES.filter(_not_int), st.sampled_from(["12000", 12000.0, True, -1, 100_000_001])),
    "word_limit": st.one_of(JSON_VALUES.filter(_not_int), st.sampled_from(["400", 400.0, False, 49, 5001])),
    "delivery": JSON_VALUES.filter(_not_dict),
    "delivery.target": st.one_of(JSON_VALUES, st.sampled_from(["CMS", "fax", "cms ", ""])).filter(
        lambda value: value not in ("cms", "email", "social")
    ),
}
"""Per field path, values the field refuses: a wrong type, a wrong literal, out of bounds, blank or too long."""


def with_value(brief: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``brief`` with the field at ``path`` (``a``, ``a.b`` or ``a[0]``) set to ``value``."""
    changed = copy.deepcopy(brief)
    if "." in path:
        parent, child = path.split(".")
        changed[parent][child] = value
    elif path.endswith("[0]"):
        changed[path[:-3]][0] = value
    else:
        changed[path] = value
    return changed


def without(brief: dict[str, Any], path: str) -> dict[str, Any]:
    """The brief without the field at ``path`` (``delivery.target``: a member of ``delivery``)."""
    return _without_keys(brief, tuple(path.split(".")))


def _without_keys(brief: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """Keys, not a dotted path: an extra field drawn earlier may have any name, ``.`` included."""
    changed = copy.deepcopy(brief)
    *parents, last = keys
    holder = changed
    for parent in parents:
        holder = holder[parent]
    holder.pop(last, None)  # an earlier mutation may have removed it already
    return changed


def _json(value: Any, ascii_only: bool) -> str:
    if isinstance(value, HugeInteger):
        return "9" * value.digits
    if isinstance(value, dict):
        members = (f"{_json(str(key), ascii_only)}: {_json(item, ascii_only)}" for key, item in value.items())
        return "{" + ", ".join(members) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_json(item, ascii_only) for item in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


def encoded(value: Any, ascii_only: bool) -> bytes:
    """JSON bytes; lone surrogates become ``\\udXXX`` escapes when ASCII-only, else invalid UTF-8 bytes."""
    return _json(value, ascii_only).encode("utf-8", errors="surrogatepass")


def with_duplicate_key(data: bytes, key: str, value: Any, first: bool) -> bytes:
    """The object in ``data`` with one more ``key`` in its raw text: before its others (the last wins) or after."""
    member = encoded(key, ascii_only=True) + b": " + encoded(value, ascii_only=True)
    if first:
        return b"{" + member + b", " + data[1:]
    return data[:-1] + b", " + member + b"}"


@st.composite
def mutated_briefs(draw: st.DrawFn) -> bytes:
    """A valid brief after one to four mutations: a field of a wrong type, removed, duplicated, or an extra one."""
    brief = draw(VALID_BRIEFS)
    duplicates: list[tuple[str, Any, bool]] = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["wrong type", "removed", "extra", "duplicated"]))
        if kind == "wrong type":
            path = draw(st.sampled_from(sorted(WRONG_TYPES)))
            if "." in path and not isinstance(brief.get("delivery"), dict):
                continue
            if path.endswith("[0]") and not (isinstance(items := brief.get(path[:-3]), list) and items):
                continue  # an earlier mutation made it a non-list or an empty list: no first item to change
            brief = with_value(brief, path, draw(WRONG_TYPES[path]))
        elif kind == "removed" and brief:
            delivery = brief.get("delivery")
            children = [("delivery", child) for child in delivery] if isinstance(delivery, dict) else []
            brief = _without_keys(brief, draw(st.sampled_from(sorted([*((key,) for key in brief), *children]))))
        elif kind == "extra":
            brief = {**brief, draw(st.text(max_size=20)): draw(JSON_VALUES)}
        else:
            duplicates.append((draw(st.sampled_from(FIELDS)), draw(JSON_VALUES), draw(st.booleans())))
    data = encoded(brief, ascii_only=draw(st.booleans()))
    for key, value, first in duplicates:
        data = with_duplicate_key(data, key, value, first)
    return data


def nested(depth: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * depth + b"1" + b"]" * depth
    return b'{"a": ' * depth + b"1" + b"}" * depth


DEEPLY_NESTED = st.builds(nested, st.integers(1, MAX_BRIEF_BYTES // 2), st.sampled_from(["list", "object"]))
OVERSIZED = st.integers(MAX_BRIEF_BYTES + 1, MAX_BRIEF_BYTES + 64).map(lambda size: b"{" + b" " * (size - 2) + b"}")
