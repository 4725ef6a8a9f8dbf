"""Bad input never hurts the caller: whatever an event holds, ``log()`` returns at once without
raising, the event is stored in the form docs/reliability.md ("Sanitising rules") documents,
and ``stats()["sanitised"]`` counts it.

The expected stored form is computed here, from the documented rules alone (``Expected``), and
compared with what PostgreSQL returns for the event's row (found by a unique entity id). The
generated inputs hold NUL characters, lone surrogates, text around and far beyond the 100 000
character limit, non-JSON values (datetimes, Decimals, UUIDs, sets, bytes, enums, arbitrary
objects), NaN and infinities, non-string keys, cycles and deep nesting. A few inputs that no
generator should produce at random (10 MB strings, 10 000 levels, objects whose ``repr``
or iteration raises, ``SystemExit`` and other ``BaseException``s included) have tests of their
own, as has one such event among 999 good ones in a single batch.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import enum
import itertools
import json
import math
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from psycopg import sql
from psycopg.rows import dict_row

from llamalogger import LlamaLogger

MAX_TEXT = 100_000
MAX_DEPTH = 32
REPLACEMENT = "\ufffd"
# The caller only appends to a queue, whatever the event holds. The fastest of a few calls
# is compared with this bound: taking the fastest absorbs a loaded machine's scheduler
# pauses, and work that grows with the event (copying or encoding megabytes) would show in
# every call.
QUICK = 0.05
TIMED_CALLS = 5

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_ids = itertools.count()


# --- the documented rules, as an oracle --------------------------------------------------------


class Expected:
    """The stored form of an event's texts and details according to docs/reliability.md.

    ``cleaned`` is set when a rule for something PostgreSQL cannot store applied (NUL, lone
    surrogates, over-long text or JSON, NaN/inf, a cycle, too deep); ``converted`` when a value
    only needed its documented JSON stand-in (datetime, Decimal, set, bytes, key repr, ...).
    """

    def __init__(self) -> None:
        self.cleaned = False
        self.converted = False

    def text(self, text: str) -> str:
        if _UNSTORABLE.search(text):
            self.cleaned = True
            text = _UNSTORABLE.sub(REPLACEMENT, text)
        if len(text) > MAX_TEXT:
            self.cleaned = True
            text = text[:MAX_TEXT] + f"... [truncated {len(text) - MAX_TEXT} chars]"
        return text

    def key(self, key: object) -> str:
        if isinstance(key, str):
            return self.text(key)
        self.converted = True
        return self.text(repr(key))

    def value(self, value: object, depth: int, enclosing: frozenset[int]) -> object:
        """``value`` as stored; ``depth`` is how many containers enclose it (details: 1)."""
        if isinstance(value, str):
            return self.text(value)
        if value is None or isinstance(value, bool | int):
            return value
        if isinstance(value, float):
            if math.isfinite(value):
                return value
            self.cleaned = True
            return {math.inf: "inf", -math.inf: "-inf"}.get(value, "nan")
        if isinstance(value, Mapping | list | tuple | set | frozenset):
            if depth >= MAX_DEPTH:  # this container would be level 33 or deeper
                self.cleaned = True
                return "[too deep]"
            if id(value) in enclosing:
                self.cleaned = True
                return "[cycle]"
            inner = enclosing | {id(value)}
            if isinstance(value, Mapping):
                return {self.key(k): self.value(v, depth + 1, inner) for k, v in value.items()}
            if isinstance(value, set | frozenset):
                self.converted = True
                value = sorted(value, key=repr)
            return [self.value(item, depth + 1, inner) for item in value]
        self.converted = True
        if isinstance(value, dt.datetime | dt.date | dt.time):
            return value.isoformat()
        if isinstance(value, decimal.Decimal | uuid.UUID):
            return str(value)
        if isinstance(value, bytes | bytearray | memoryview):
            return bytes(value).hex()
        if isinstance(value, enum.Enum):
            return self.value(value.value, depth, enclosing)
        return self.text(repr(value))

    def details(self, details: Mapping[str, Any] | None) -> object:
        if not details:
            return None
        stored = self.value(details, 0, frozenset())
        as_json = json.dumps(stored, ensure_ascii=False)
        if len(as_json) > MAX_TEXT:
            self.cleaned = True
            return {"truncated": self.text(as_json)}
        return stored


def comparable(value: object) -> object:
    """JSON as PostgreSQL gives it back: jsonb keeps numbers as numeric (1e300 comes back as
    an int), and tuples are lists."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, Mapping):
        return {key: comparable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [comparable(item) for item in value]
    raise AssertionError(f"not JSON: {value!r:.80}")


# --- inputs ---------------------------------------------------------------------------------


class Colour(enum.Enum):
    RED = "red"
    SEVEN = 7


class Size(enum.IntEnum):
    SMALL = 1
    LARGE = 3


class Shown:
    """An object JSON knows nothing about, with a repr of its own (its str raises)."""

    def __init__(self, shown: str) -> None:
        self.shown = shown

    def __repr__(self) -> str:
        return self.shown

    def __str__(self) -> str:
        raise RuntimeError("str() is not the documented stand-in")


RESERVED = {"self", "category", "message", "entity", "related", "level"}  # log()'s parameters

awkward_chars = st.one_of(
    st.characters(),
    st.sampled_from(["\x00", "\ud800", "\udbff", "\udc00", "\udfff", REPLACEMENT, "\\", '"']),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, categories=["Cs"]),
)
awkward_text = st.text(awkward_chars, max_size=30)


def _repeat(unit: str, length: int) -> str:
    return (unit * (length // len(unit) + 1))[:length]


long_text = st.builds(
    _repeat,
    st.text(awkward_chars, min_size=1, max_size=4),
    st.integers(MAX_TEXT - 3, MAX_TEXT + 3) | st.integers(MAX_TEXT + 4, 3 * MAX_TEXT),
)
any_text = awkward_text | long_text
hashable_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.floats(),
    awkward_text,
    st.decimals(allow_nan=False),
    st.datetimes(timezones=st.none() | st.just(dt.UTC)),
    st.dates(),
    st.times(),
    st.uuids(),
    st.binary(max_size=8),
    st.sampled_from(list(Colour) + list(Size)),
)
hashables = st.recursive(
    hashable_leaves,
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
    max_leaves=6,
)
leaves = st.one_of(
    hashable_leaves,
    st.binary(max_size=8).flatmap(lambda b: st.sampled_from([bytearray(b), memoryview(b)])),
    st.builds(Shown, awkward_text),
)
json_ish = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(awkward_text | hashables, inner, max_size=4),
        st.sets(hashables, max_size=4),
        st.frozensets(hashables, max_size=4),
    ),
    max_leaves=12,
)
detail_keys = awkward_text.filter(lambda key: key not in RESERVED)
text_details = st.none() | st.dictionaries(detail_keys, any_text, min_size=1, max_size=3)
any_details = st.none() | st.dictionaries(detail_keys, json_ish, min_size=1, max_size=4)

SETTINGS = settings(
    max_examples=100,
    deadline=None,  # each example waits for a real COPY
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- logging one event and reading it back ----------------------------------------------------


def log_and_read(
    logger: LlamaLogger,
    conn: psycopg.Connection[Any],
    schema: str,
    *,
    message: str,
    details: Mapping[str, Any] | None = None,
    job_name: str | None = None,
    related_id: str | None = None,
    flush_timeout: float = 30,
) -> tuple[dict[str, Any], int]:
    """Log one event (asserting the call raises nothing), flush, and return its row and how
    much ``stats()["sanitised"]`` grew. How long the call takes is ``test_the_caller_pays``'s."""
    entity_id = f"bad-{next(_ids)}-{uuid.uuid4().hex[:8]}"
    related = ("other", related_id) if related_id is not None else None
    before = logger.stats()["sanitised"]
    scope = logger.job(job_name) if job_name is not None else contextlib.nullcontext()
    with scope:
        logger.log(
            "ENRICHED", message, entity=("bad", entity_id), related=related, **(details or {})
        )
    assert logger.flush(timeout=flush_timeout), "the event was not written"
    query = sql.SQL("SELECT * FROM {}.llama_log WHERE entity_type = 'bad' AND entity_id = %s")
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query.format(sql.Identifier(schema)), [entity_id]).fetchall()
    assert len(rows) == 1, f"{len(rows)} rows for one event"
    return rows[0], logger.stats()["sanitised"] - before


def check_stored(
    row: dict[str, Any],
    expected: Expected,
    *,
    message: str,
    details: Mapping[str, Any] | None,
    job_name: str | None = None,
    related_id: str | None = None,
) -> None:
    assert row["message"] == expected.text(message)
    assert row["job_name"] == (None if job_name is None else expected.text(job_name))
    assert row["related_id"] == (None if related_id is None else expected.text(related_id))
    want = expected.details(details)
    assert comparable(row["details"]) == (None if want is None else comparable(want))


# --- the properties ---------------------------------------------------------------------------


@SETTINGS
@given(
    message=any_text,
    details=text_details,
    job_name=st.none() | st.text(awkward_chars, max_size=200),
    related_id=st.none() | st.text(awkward_chars, min_size=1, max_size=255),
)
def test_text_is_stored_with_nul_and_surrogates_replaced_and_long_text_cut(
    module_logger: LlamaLogger,
    module_conn: psycopg.Connection[Any],
    module_schema: str,
    message: str,
    details: dict[str, str] | None,
    job_name: str | None,
    related_id: str | None,
) -> None:
    """Every text (message, job name, related id, detail keys and values) is stored with NUL
    and lone surrogates as U+FFFD and cut after 100 000 characters with a note of the rest."""
    row, _ = log_and_read(
        module_logger,
        module_conn,
        module_schema,
        message=message,
        details=details,
        job_name=job_name,
        related_id=related_id,
    )
    check_stored(
        row, Expected(), message=message, details=details, job_name=job_name, related_id=related_id
    )


@SETTINGS
@given(message=any_text, details=any_details)
# A cleaned message must be counted even when the event has details (once it was not).
@example(message="nul\x00", details={"fine": 1})
def test_an_event_is_counted_as_sanitised_exactly_when_it_had_to_be_cleaned(
    module_logger: LlamaLogger,
    module_conn: psycopg.Connection[Any],
    module_schema: str,
    message: str,
    details: dict[str, Any] | None,
) -> None:
    """stats()["sanitised"] grows by one for an event that needed cleaning (NUL, surrogate,
    over-long text or JSON, NaN/inf, cycle, too deep) and stays put for an untouched one."""
    row, counted = log_and_read(
        module_logger, module_conn, module_schema, message=message, details=details
    )
    expected = Expected()  # the stored form is the other tests' business: only count here
    expected.text(message)
    expected.details(details)
    assert row["message"] is not None
    if expected.cleaned:
        assert counted == 1
    elif not expected.converted:
        assert counted == 0
    # An event that only needed JSON stand-ins (datetime, Decimal, key repr, ...) may be
    # counted either way: the rules do not say whether that is "sanitised".


@SETTINGS
@given(details=st.dictionaries(detail_keys, json_ish, min_size=1, max_size=4))
# Found by this test (since fixed): non-string keys that json.dumps accepts (bool, None, IntEnum)
# were stored as JSON spells them ("true", "null", "1"), not as their repr().
@example(details={"flags": {True: "yes", None: "nothing"}})
@example(details={"sizes": {Size.SMALL: "s"}})
def test_non_json_details_are_stored_as_their_documented_stand_ins(
    module_logger: LlamaLogger,
    module_conn: psycopg.Connection[Any],
    module_schema: str,
    details: dict[str, Any],
) -> None:
    """Datetimes as ISO 8601, Decimals and UUIDs as str(), sets as lists sorted by repr, bytes
    as hex, enums as their value, NaN/inf as "nan"/"inf", non-string keys and other objects
    as their repr()."""
    row, _ = log_and_read(
        module_logger, module_conn, module_schema, message="odd details", details=details
    )
    check_stored(row, Expected(), message="odd details", details=details)


def nest(kinds: list[str], leaf: object) -> object:
    """Containers of ``kinds``, outermost first, around ``leaf``."""
    value = leaf
    for kind in reversed(kinds):
        value = {"k": value} if kind == "dict" else [value] if kind == "list" else (value,)
    return value


def cyclic(shape: str) -> object:
    """A structure with (or, for "shared", without) a cycle."""
    if shape == "list":
        loop: list[object] = [1]
        loop.append(loop)
        return loop
    if shape == "dict":
        mapping: dict[str, object] = {"a": 1}
        mapping["self"] = mapping
        return mapping
    if shape == "indirect":
        outer: list[object] = []
        inner: dict[str, object] = {"back": outer}
        outer.append(inner)
        return outer
    shared = [1, 2]
    return {"first": shared, "second": [shared, shared]}  # the same list thrice: no cycle


@SETTINGS
@given(
    kinds=st.lists(st.sampled_from(["list", "dict", "tuple"]), min_size=1, max_size=45),
    shape=st.none() | st.sampled_from(["list", "dict", "indirect", "shared"]),
)
@example(kinds=["list"] * 31, shape=None)  # the deepest container that is kept (level 32)
# Found by this test (since fixed): nesting deeper than 32 levels was stored whole unless something
# else (NaN, a cycle, NUL, ...) sends the details down the careful path.
@example(kinds=["list"] * 40, shape=None)
def test_cycles_and_nesting_deeper_than_32_levels_are_replaced(
    module_logger: LlamaLogger,
    module_conn: psycopg.Connection[Any],
    module_schema: str,
    kinds: list[str],
    shape: str | None,
) -> None:
    """A container met again inside itself is stored as "[cycle]" (a container merely shared
    is stored in full each time); a container nested more than 32 levels deep (the details
    object being level 1) is stored as "[too deep]"."""
    details = {"nested": nest(kinds, cyclic(shape) if shape else "leaf")}
    row, _ = log_and_read(
        module_logger, module_conn, module_schema, message="nested", details=details
    )
    check_stored(row, Expected(), message="nested", details=details)


# --- inputs too big or too strange to generate ----------------------------------------------


def test_ten_thousand_levels_of_nesting_are_cut_at_level_32(
    module_logger: LlamaLogger, module_conn: psycopg.Connection[Any], module_schema: str
) -> None:
    """10 000 nested lists (deeper than the interpreter's recursion limit) are stored cut at
    level 32, the caller returns at once, and the event is counted as sanitised."""
    details = {"deep": nest(["list"] * 10_000, "leaf")}
    row, counted = log_and_read(
        module_logger, module_conn, module_schema, message="very deep", details=details
    )
    expected = Expected()
    check_stored(row, expected, message="very deep", details=details)
    assert expected.cleaned
    assert counted == 1


BIG = 10 * 1024 * 1024


HUGE = [
    pytest.param("\x00" + "m" * BIG + "\ud800", None, id="10MB-message"),
    pytest.param("big value", {"value": "v\x00" * (BIG // 10)}, id="2MB-detail-value"),
    pytest.param("big key", {"outer": {"k" * (BIG // 10): 1}}, id="1MB-detail-key"),
    pytest.param("many values", {"list": ["x" * 1000] * 1000}, id="1MB-detail-json"),
]


@pytest.mark.parametrize(("message", "details"), HUGE)
def test_huge_text_is_cut_without_making_the_caller_wait(
    module_logger: LlamaLogger,
    module_conn: psycopg.Connection[Any],
    module_schema: str,
    message: str,
    details: dict[str, Any] | None,
) -> None:
    """Megabytes of text cost the caller nothing (the log call is a queue append); the
    writer stores the first 100 000 characters and a note of how many were cut, and details
    whose JSON is longer than that as {"truncated": <the JSON cut the same way>}."""
    row, counted = log_and_read(
        module_logger, module_conn, module_schema, message=message, details=details
    )
    expected = Expected()
    check_stored(row, expected, message=message, details=details)
    assert expected.cleaned
    assert counted == 1


# --- inputs that could stop the writer: each gets a logger of its own -------------------------


class Unprintable:
    """Neither repr() nor str() works."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")

    __str__ = __repr__


class CallerError(BaseException):
    """Neither an Exception nor one of the interpreter's own BaseExceptions."""


def raising(error: type[BaseException]) -> Any:
    def method(*_args: object) -> Any:
        raise error("raised by the caller's object")

    return method


def unreprable(error: type[BaseException]) -> object:
    """repr() and str() raise ``error``: SystemExit and KeyboardInterrupt included."""
    return type("Unreprable", (), {"__repr__": raising(error), "__str__": raising(error)})()


class UnreadableMapping(Mapping[str, int]):
    """A Mapping whose iteration raises a BaseException."""

    def __getitem__(self, key: str) -> int:
        return 1

    def __iter__(self) -> Iterator[str]:
        raise GeneratorExit("iteration")

    def __len__(self) -> int:
        return 1


class UnreadableList(list[int]):
    """A list subclass whose iteration raises."""

    def __iter__(self) -> Iterator[int]:
        raise CallerError("iteration")


HOSTILE = [
    pytest.param({"thing": unreprable(error)}, id=f"repr-raises-{error.__name__}")
    for error in (SystemExit, KeyboardInterrupt, GeneratorExit, CallerError)
] + [
    pytest.param({"items": UnreadableMapping()}, id="mapping-iteration-raises"),
    pytest.param({"items": UnreadableList([1])}, id="list-subclass-iteration-raises"),
    pytest.param(
        {"items": type("ItemsRaise", (dict,), {"items": raising(KeyboardInterrupt)})(a=1)},
        id="dict-subclass-items-raises",
    ),
]


@pytest.fixture
def own_logger(dsn: str, module_schema: str) -> Iterator[LlamaLogger]:
    """A logger for one test: if its writer thread dies, only this test notices. Its long
    flush interval puts everything logged before a flush() into one batch."""
    logger = LlamaLogger(dsn, schema=module_schema, flush_interval=30, exit_timeout=1)
    try:
        yield logger
    finally:
        logger.close(timeout=1)


@pytest.mark.parametrize(
    "details",
    [
        pytest.param({"thing": Unprintable()}, id="repr-raises"),
        pytest.param({"things": {Unprintable(), 1}}, id="repr-raises-in-a-set"),
        pytest.param({"keys": {Unprintable(): 1}}, id="repr-raises-in-a-key"),
        pytest.param({"thing": Shown("fine")}, id="str-raises-repr-works"),
        pytest.param({"number": 10**5000}, id="int-too-long-for-str"),
        pytest.param({"keys": {10**5000: 1}}, id="int-key-too-long-for-repr"),
        *HOSTILE,
    ],
)
def test_details_that_cannot_be_printed_are_stored_with_their_batch_mates(
    own_logger: LlamaLogger,
    module_conn: psycopg.Connection[Any],
    module_schema: str,
    details: dict[str, Any],
) -> None:
    """The content of an event never raises: details whose repr() (or str()) raises, or an
    int too long to print, still give a stored row (the stand-in's form is not documented),
    and so do the events logged in the same batch and after it."""
    run = uuid.uuid4().hex
    own_logger.log("ENRICHED", "before", entity=("bad", f"{run}-before"))
    own_logger.log("ENRICHED", "unprintable", entity=("bad", f"{run}-odd"), **details)
    own_logger.log("ENRICHED", "beside", entity=("bad", f"{run}-beside"))
    flushed = own_logger.flush(timeout=5)
    own_logger.log("ENRICHED", "after", entity=("bad", f"{run}-after"))
    flushed_after = own_logger.flush(timeout=5)
    query = sql.SQL(
        "SELECT entity_id, details FROM {}.llama_log WHERE entity_type = 'bad'"
        " AND entity_id LIKE %s ORDER BY id"
    ).format(sql.Identifier(module_schema))
    stored = dict(module_conn.execute(query, [f"{run}-%"]).fetchall())
    assert list(stored) == [f"{run}-{name}" for name in ("before", "odd", "beside", "after")]
    assert set(stored[f"{run}-odd"]) == set(details)
    assert flushed
    assert flushed_after
    assert own_logger.stats()["dropped"] == 0


def test_a_message_whose_str_raises_is_stored(
    own_logger: LlamaLogger, module_conn: psycopg.Connection[Any], module_schema: str
) -> None:
    """A message object whose str() raises does not reach the caller as an exception; some
    text standing for it is stored."""
    row, _ = log_and_read(
        own_logger,
        module_conn,
        module_schema,
        message=Unprintable(),  # type: ignore[arg-type]
    )
    assert isinstance(row["message"], str)
    assert row["message"]


@pytest.mark.parametrize("details", HOSTILE)
def test_one_hostile_event_among_999_good_ones_costs_nothing_but_its_own_details(
    own_logger: LlamaLogger,
    module_conn: psycopg.Connection[Any],
    module_schema: str,
    details: dict[str, Any],
) -> None:
    """A batch of 999 good events and one whose details raise a BaseException when read is
    stored whole: 1000 rows, the good ones exactly as logged, the hostile one with an
    "<unprintable ...>" stand-in for its bad detail, counted once as sanitised."""
    run = uuid.uuid4().hex
    before = own_logger.stats()
    for number in range(1000):
        extra = details if number == 500 else {"n": number, "source": "musicbrainz"}
        own_logger.log("ENRICHED", f"event {number}", entity=("bad", f"{run}-{number}"), **extra)
    assert own_logger.flush(timeout=30)
    after = own_logger.stats()
    query = sql.SQL(
        "SELECT entity_id, message, details FROM {}.llama_log WHERE entity_type = 'bad'"
        " AND entity_id LIKE %s ORDER BY id"
    ).format(sql.Identifier(module_schema))
    rows = module_conn.execute(query, [f"{run}-%"]).fetchall()
    assert len(rows) == 1000
    assert after["batches"] - before["batches"] == 1  # one batch: the hostile one's mates
    assert after["sanitised"] - before["sanitised"] == 1
    assert after["dropped"] == before["dropped"]
    for number, (entity_id, message, stored) in enumerate(rows):
        assert entity_id == f"{run}-{number}"
        assert message == f"event {number}"
        if number != 500:
            assert stored == {"n": number, "source": "musicbrainz"}
    (bad_value,) = rows[500][2].values()
    assert isinstance(bad_value, str)
    assert bad_value.startswith("<unprintable ")


@pytest.mark.timing
@pytest.mark.parametrize(
    ("message", "details"),
    [
        *HUGE,
        *(
            pytest.param("hostile", details, id=param.id)
            for param in HOSTILE
            for details in param.values
        ),
    ],
)
def test_the_caller_pays_nothing_for_what_an_event_holds(
    own_logger: LlamaLogger, module_schema: str, message: str, details: dict[str, Any] | None
) -> None:
    """However big or hostile an event is, logging it is a queue append: the fastest of a
    few calls stays below QUICK, and every one of them is stored."""
    run = uuid.uuid4().hex
    fastest = float("inf")
    for number in range(TIMED_CALLS):
        started = time.perf_counter()
        own_logger.log("ENRICHED", message, entity=("timed", f"{run}-{number}"), **(details or {}))
        fastest = min(fastest, time.perf_counter() - started)
    assert fastest < QUICK, f"log() took {fastest * 1000:.1f} ms at best"
    assert own_logger.flush(timeout=60)
    assert own_logger.stats()["dropped"] == 0
