"""``_sanitise``: any caller's event becomes a storable row, and we know whether it changed.

No database here: these tests look at the rows ``fast_row``, ``clean_row`` and ``describe``
build. That PostgreSQL stores them as the rules say is tests/properties/test_bad_input.py's job.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from llamalogger._pipeline.sanitise import (
    MAX_DETAILS_DEPTH,
    MAX_TEXT_LENGTH,
    _careful_json,
    _fast_jsonb,
    clean,
    clean_row,
    describe,
    described,
    encode,
    fast_row,
)
from llamalogger._records import JOB, JOB_COLUMNS, PG_EPOCH_US, JobRecord, JobStatus, Record

# --- callers' objects that raise wherever they can ----------------------------------------


class CustomBaseError(BaseException):
    """A BaseException that is neither an Exception nor one of the interpreter's own."""


RAISED: list[type[BaseException]] = [
    SystemExit,
    KeyboardInterrupt,
    GeneratorExit,
    CustomBaseError,
    RuntimeError,
    RecursionError,
    MemoryError,
]


def raiser(error: type[BaseException]) -> Callable[..., Any]:
    def method(*_args: object, **_kwargs: object) -> Any:
        raise error("raised by the caller's object")

    return method


def unreprable(error: type[BaseException]) -> object:
    """An object whose repr() and str() raise ``error``."""
    kind = type("Unreprable", (), {"__repr__": raiser(error), "__str__": raiser(error)})
    return kind()


def unreadable_mapping(error: type[BaseException], where: str) -> object:
    """A Mapping whose ``where`` (items, keys, __iter__, __len__, __getitem__) raises."""

    class Unreadable(Mapping[str, int]):
        def __getitem__(self, key: str) -> int:
            return 1

        def __iter__(self) -> Iterator[str]:
            return iter(["a", "b"])

        def __len__(self) -> int:
            return 2

    setattr(Unreadable, where, raiser(error))
    return Unreadable()


def dict_subclass(error: type[BaseException], where: str) -> object:
    kind = type("UnreadableDict", (dict,), {where: raiser(error)})
    return kind(a=1)


def list_subclass(error: type[BaseException], where: str) -> object:
    kind = type("UnreadableList", (list,), {where: raiser(error)})
    return kind([1, 2])


class HostileKey:
    """A key that was hashable when the dict was built and raises from then on."""

    armed = False

    def __init__(self, error: type[BaseException]) -> None:
        self.error = error

    def __hash__(self) -> int:
        if HostileKey.armed:
            raise self.error("hash")
        return 1

    def __eq__(self, other: object) -> bool:
        if HostileKey.armed:
            raise self.error("eq")
        return other is self

    def __repr__(self) -> str:
        raise self.error("repr")


class HostileText(str):
    """A str whose own methods all raise; its characters are fine."""

    __len__ = raiser(SystemExit)
    __hash__ = raiser(SystemExit)  # type: ignore[assignment]
    __eq__ = raiser(SystemExit)  # type: ignore[assignment]
    __contains__ = raiser(SystemExit)
    __format__ = raiser(SystemExit)
    __str__ = raiser(SystemExit)
    encode = raiser(SystemExit)  # type: ignore[assignment]
    isascii = raiser(SystemExit)  # type: ignore[assignment]
    replace = raiser(SystemExit)  # type: ignore[assignment]


class HostileKeyText(HostileText):
    """As HostileText, but hashable, so that it can be a dict key."""

    __hash__ = str.__hash__
    __eq__ = str.__eq__  # type: ignore[assignment]


def no_class(error: type[BaseException]) -> object:
    """isinstance() looks at ``__class__`` when the type check fails: here that raises."""
    kind = type("NoClass", (), {"__class__": property(raiser(error))})
    return kind()


def keyed_by_hostile(error: type[BaseException]) -> dict[object, int]:
    HostileKey.armed = False
    mapping: dict[object, int] = {HostileKey(error): 1}
    HostileKey.armed = True
    return mapping


def hostile_details(
    error: type[BaseException],
) -> Iterator[tuple[str, Callable[[], object], object]]:
    """(name, make, stored): ``stored`` is what the value reads as when the methods that
    raise are ones the sanitiser never calls; ``None``: it must become a stand-in."""
    yield "repr-raises", lambda: unreprable(error), None
    yield "repr-raises-in-a-set", lambda: {unreprable(error), 1}, None
    yield "repr-raises-in-a-list", lambda: [1, unreprable(error)], None
    for where in ("items", "__iter__", "__getitem__"):
        yield f"mapping-{where}-raises", lambda w=where: unreadable_mapping(error, w), None
    for where in ("keys", "__len__", "__contains__", "__eq__"):
        yield (
            f"mapping-{where}-raises",
            lambda w=where: unreadable_mapping(error, w),
            {"a": 1, "b": 1},
        )
    yield "dict-subclass-items-raises", lambda: dict_subclass(error, "items"), None
    for where in ("keys", "__len__", "__iter__", "__eq__", "__hash__"):
        yield f"dict-subclass-{where}-raises", lambda w=where: dict_subclass(error, w), {"a": 1}
    yield "list-subclass-__iter__-raises", lambda: list_subclass(error, "__iter__"), None
    for where in ("__len__", "__getitem__", "__eq__", "__hash__"):
        yield f"list-subclass-{where}-raises", lambda w=where: list_subclass(error, w), [1, 2]
    yield "key-hash-eq-repr-raise", lambda: keyed_by_hostile(error), None


HOSTILE = [
    pytest.param(make, want, id=f"{name}-{error.__name__}")
    for error in RAISED
    for name, make, want in hostile_details(error)
]


def record(
    message: str | None = "an event",
    details: Mapping[str, Any] | None = None,
    *,
    entity: tuple[str, str] = ("track", "9"),
    related: tuple[str, str] | None = None,
    category: str = "ENRICHED",
) -> Record:
    related_type, related_id = related if related is not None else (None, None)
    return (
        1, category, "info", message, "job", None, "job", "import",
        *entity, related_type, related_id, details,
    )  # fmt: skip


def stored(payload: object) -> object:
    """The JSON a jsonb payload (version byte + text) carries."""
    assert isinstance(payload, bytes)
    assert payload[:1] == b"\x01"
    return json.loads(payload[1:])


def assert_plain_strs(row: tuple[object, ...]) -> None:
    """Every text column is a plain str (or NULL): no caller code can run in the COPY."""
    for value in row[1:12]:
        assert value is None or type(value) is str


# --- never raise ---------------------------------------------------------------------------


class TestNeverRaises:
    @pytest.mark.parametrize(("make", "readable"), HOSTILE)
    def test_hostile_detail_becomes_an_unprintable_stand_in_and_counts_as_changed(
        self, make: Callable[[], object], readable: object
    ) -> None:
        """fast_row, clean_row and describe all return for a detail whose methods raise
        anything (BaseException included). When the sanitiser needs a method that raises,
        the value is stored as a stand-in naming its type and the error and the row counts
        as changed; a raising method it never calls changes nothing. Neighbours are kept."""
        details = {"good": "kept", "bad": make()}
        for build in (fast_row, clean_row):
            row, changed = build(record(details=details))
            value = stored(row[12])
            assert isinstance(value, dict)
            assert value["good"] == "kept"
            if readable is None:
                assert changed
                assert "<unprintable " in json.dumps(value["bad"])
            else:
                assert value["bad"] == readable
        described = describe(record(details=details))
        assert isinstance(described["details"], dict)
        assert described["details"]["good"] == "kept"
        json.dumps(described)  # ready for the dead-letter file as it is

    @pytest.mark.parametrize("error", RAISED)
    def test_isinstance_that_raises_is_a_stand_in(self, error: type[BaseException]) -> None:
        """An object whose ``__class__`` raises (isinstance() asks for it) is a stand-in."""
        row, changed = fast_row(record(details={"odd": no_class(error)}))
        assert changed
        assert stored(row[12]) == {"odd": f"<unprintable NoClass: {error.__name__}>"}

    def test_text_columns_of_a_hostile_str_subclass_become_plain_strs(self) -> None:
        """Texts that are str subclasses with raising methods are copied as plain strs with
        the same characters; that alone is no change."""
        texts = {name: HostileText(name) for name in ("message", "type", "id", "value")}
        texts["key"] = HostileKeyText("key")
        hostile = record(
            texts["message"],
            {texts["key"]: texts["value"]},
            entity=(texts["type"], texts["id"]),
        )
        row, changed = clean_row(hostile)
        assert_plain_strs(row)
        assert row[3] == "message"
        assert row[8:10] == ("type", "id")
        assert stored(row[12]) == {"key": "value"}
        assert not changed
        fast, _ = fast_row(hostile)
        assert_plain_strs(fast)
        assert describe(hostile)["message"] == "message"

    def test_default_message_of_a_hostile_entity_is_composed_from_its_characters(self) -> None:
        """A created()/linked() event without message gets its default message even when the
        entity texts are str subclasses whose formatting raises."""
        linked = record(
            None, entity=(HostileText("artist"), "7"), related=("track", "9"), category="LINKED"
        )
        for build in (fast_row, clean_row):
            row, _ = build(linked)
            assert row[3] == "artist 7 linked to track 9"

    @pytest.mark.parametrize(
        ("value", "want"),
        [
            pytest.param(10**5000, "<int of 16610 bits>", id="int-too-long-to-print"),
            pytest.param(math.nan, "nan", id="nan"),
            pytest.param(-math.inf, "-inf", id="minus-inf"),
            pytest.param("a\x00b\ud800", "a\ufffdb\ufffd", id="nul-and-surrogate"),
        ],
    )
    def test_values_postgresql_cannot_store_are_replaced(self, value: object, want: str) -> None:
        row, changed = fast_row(record(details={"v": value}))
        assert changed
        assert stored(row[12]) == {"v": want}

    def test_a_cycle_is_cut_where_it_closes(self) -> None:
        loop: list[object] = [1]
        loop.append(loop)
        row, changed = fast_row(record(details={"loop": loop}))
        assert changed
        assert stored(row[12]) == {"loop": [1, "[cycle]"]}

    def test_one_hostile_record_leaves_its_batch_mates_untouched(self) -> None:
        """Rows are built one record at a time: the records around a hostile one come out
        exactly as they would alone."""
        good = [record(f"event {n}", {"n": n, "source": "mb"}) for n in range(5)]
        batch = [*good[:2], record(details={"bad": unreprable(SystemExit)}), *good[2:]]
        rows = [fast_row(item) for item in batch]
        assert [changed for _, changed in rows] == [False, False, True, False, False, False]
        alone = [fast_row(item) for item in good]
        assert [row for row, _ in rows[:2] + rows[3:]] == [row for row, _ in alone]


# --- the fast path (orjson) and the careful one agree ----------------------------------------

plain_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00")),
    st.datetimes(timezones=st.none() | st.just(dt.UTC)),
    st.dates(),
    st.times(),
    st.decimals(),
    st.uuids(),
)
plain_values = st.recursive(
    plain_scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=5).filter(lambda k: "\x00" not in k), inner, max_size=3)
    ),
    max_leaves=10,
)


class TestFastPath:
    @given(details=st.dictionaries(st.text(max_size=8), plain_values, min_size=1, max_size=4))
    @example(details={"literal": "\\u0000"})
    def test_orjson_stores_plain_details_as_the_careful_path_does(
        self, details: dict[str, Any]
    ) -> None:
        """For plain details the orjson encoding (when it takes them) holds the same JSON as
        the careful path's, and the careful path finds nothing to change."""
        fast = _fast_jsonb(details)
        careful, changed = _careful_json(details)
        assert not (changed and fast is not None)
        # Only what needs changing leaves the fast path; and text that spells a backslash
        # and "u0000", which costs a look by the careful path and nothing else.
        assert fast is not None or changed or "\\u0000" in careful
        if fast is not None:
            assert stored(fast) == json.loads(careful)

    def test_plain_details_take_the_fast_path(self) -> None:
        """A realistic event's details are encoded by orjson (compact: no spaces)."""
        row, changed = fast_row(record(details={"source": "mb", "score": 0.5, "tries": 2}))
        assert row[12] == b'\x01{"source":"mb","score":0.5,"tries":2}'
        assert not changed

    @pytest.mark.parametrize(
        ("details", "want"),
        [
            pytest.param({"big": 2**64}, {"big": 2**64}, id="int-beyond-64-bits-kept"),
            pytest.param({"big": -(2**63) - 1}, {"big": -(2**63) - 1}, id="negative-beyond-64"),
            pytest.param({"nan": math.nan}, {"nan": "nan"}, id="nan-not-null"),
            pytest.param({"inf": math.inf}, {"inf": "inf"}, id="inf-not-null"),
            pytest.param({"m": {1: "a", None: "b"}}, {"m": {"1": "a", "None": "b"}}, id="keys"),
            pytest.param({"s": "\ud800"}, {"s": "\ufffd"}, id="lone-surrogate"),
            pytest.param({"s": "a\x00"}, {"s": "a\ufffd"}, id="nul"),
            pytest.param({"e": decimal.Decimal("NaN")}, {"e": "NaN"}, id="decimal-nan-as-text"),
            pytest.param(
                {"t": dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC)},
                {"t": "2026-01-02T03:04:05.000006+00:00"},
                id="datetime-isoformat",
            ),
            pytest.param({"u": uuid.UUID(int=1)}, {"u": str(uuid.UUID(int=1))}, id="uuid"),
        ],
    )
    def test_what_orjson_refuses_or_would_change_is_stored_by_the_rules(
        self, details: dict[str, Any], want: object
    ) -> None:
        row, _ = fast_row(record(details=details))
        assert stored(row[12]) == want

    def test_nesting_deeper_than_the_limit_is_cut_on_either_path(self) -> None:
        """32 levels are kept, the 33rd is "[too deep]", though orjson would take 254."""

        def nest(levels: int) -> object:
            value: object = "leaf"
            for _ in range(levels):
                value = [value]
            return value

        kept, changed = fast_row(record(details={"d": nest(MAX_DETAILS_DEPTH - 1)}))
        assert not changed
        assert stored(kept[12]) == {"d": nest(MAX_DETAILS_DEPTH - 1)}
        cut, changed = fast_row(record(details={"d": nest(MAX_DETAILS_DEPTH)}))
        assert changed
        assert "[too deep]" in json.dumps(stored(cut[12]))

    def test_details_longer_than_the_limit_are_truncated(self) -> None:
        row, changed = fast_row(record(details={"long": "x" * MAX_TEXT_LENGTH}))
        assert changed
        value = stored(row[12])
        assert isinstance(value, dict)
        assert list(value) == ["truncated"]
        assert value["truncated"].endswith(" chars]")

    def test_non_ascii_details_just_under_the_limit_in_characters_are_kept(self) -> None:
        """The limit counts characters, not UTF-8 bytes: 50,000 two-byte characters are
        100,000 bytes but fewer characters than the limit."""
        text = "é" * (MAX_TEXT_LENGTH // 2)
        row, changed = fast_row(record(details={"t": text}))
        assert not changed
        assert stored(row[12]) == {"t": text}


# --- job records -----------------------------------------------------------------------------


def job_record(
    error_message: str | None = None,
    details: Mapping[str, Any] | None = None,
    *,
    status: str = "succeeded",
    job_name: str | None = "enrich-track",
    error_type: str | None = None,
    host: str = "worker-1",
) -> JobRecord:
    return (
        2_000_000, JOB, status, error_message, "job-2", "job-1", "job-1", job_name,
        "track", "9", error_type, 1_000_000, 1, 4242, host, details,
    )  # fmt: skip


def as_record(job: JobRecord) -> Record:
    """A job record travels where events do, typed as they are."""
    return job  # type: ignore[return-value]


class TestJobRecords:
    def test_a_plain_job_record_keeps_its_fields_marker_and_details_last(self) -> None:
        """The row has the record's sixteen fields, the marker at index 1, jsonb last."""
        job = job_record(details={"queue": "enrich", "retries": 0})
        for build in (fast_row, clean_row, encode, clean):
            row, changed = build(as_record(job))
            assert not changed, build
            assert row[:15] == job[:15]
            assert row[1] == JOB
            assert stored(row[15]) == {"queue": "enrich", "retries": 0}

    def test_a_job_record_gets_no_default_message(self) -> None:
        """A job that succeeded has no error message: it stays NULL."""
        for build in (fast_row, clean_row):
            row, changed = build(as_record(job_record()))
            assert row[3] is None
            assert row[15] is None
            assert not changed

    def test_nul_and_lone_surrogates_are_left_to_the_server_then_cleaned(self) -> None:
        """As for events: fast_row passes them (the server refuses, the writer retries
        with clean_row), clean_row replaces them and says so."""
        job = job_record("boom\x00here", job_name="name\udc80", error_type="Bad\ud800Error")
        fast, changed = fast_row(as_record(job))
        assert (fast[3], fast[7], fast[10], changed) == (job[3], job[7], job[10], False)
        cleaned, changed = clean_row(as_record(job))
        assert changed
        assert (cleaned[3], cleaned[7], cleaned[10]) == (
            "boom\ufffdhere",
            "name\ufffd",
            "Bad\ufffdError",
        )
        assert cleaned[:3] == job[:3]
        assert cleaned[11:15] == job[11:15]

    def test_a_huge_error_message_is_cut_on_the_fast_path(self) -> None:
        row, changed = fast_row(as_record(job_record("x" * (MAX_TEXT_LENGTH + 10))))
        assert changed
        assert isinstance(row[3], str)
        assert row[3].startswith("x" * MAX_TEXT_LENGTH)
        assert row[3].endswith("[truncated 10 chars]")

    def test_a_status_given_as_a_job_status_takes_the_fast_path(self) -> None:
        job = (*job_record()[:2], JobStatus.CANCELLED, *job_record()[3:])
        row, changed = fast_row(as_record(job))
        assert row == job
        assert not changed
        cleaned, _ = clean_row(as_record((*job[:4], HostileText("job-2"), *job[5:])))
        assert (type(cleaned[2]), cleaned[2], cleaned[4]) == (str, "cancelled", "job-2")

    def test_str_subclasses_become_plain_strs(self) -> None:
        job = job_record(HostileText("ValueError: bad"), job_name=HostileText("import"))
        row, changed = fast_row(as_record(job))
        assert not changed  # the same characters: no change
        assert (row[3], row[7]) == ("ValueError: bad", "import")
        assert all(type(row[i]) is str for i in (2, 3, 4, 5, 6, 7, 8, 9, 14))

    @pytest.mark.parametrize("error", RAISED)
    def test_unencodable_details_become_a_stand_in_and_count_as_changed(
        self, error: type[BaseException]
    ) -> None:
        job = job_record(details={"bad": unreprable(error), "fine": 1})
        for build in (fast_row, clean_row, encode, clean):
            row, changed = build(as_record(job))
            assert changed
            value = stored(row[15])
            assert isinstance(value, dict)
            assert value["fine"] == 1
            assert str(value["bad"]).startswith("<unprintable Unreprable")

    def test_should_cleaning_itself_fail_the_job_is_kept_with_a_stand_in(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A bug in the encoder costs the job record its details, never the record."""
        from llamalogger._pipeline import sanitise

        def broken(_details: object) -> tuple[bytes, bool]:
            raise RuntimeError("a bug")

        monkeypatch.setattr(sanitise, "_jsonb", broken)
        job = job_record("failed: x", details={"queue": "enrich"})
        row, changed = clean(as_record(job))
        assert changed
        assert row[:15] == job[:15]
        assert stored(row[15]) == {"llamalogger_error": "these details could not be encoded"}

    def test_describe_names_llama_job_columns_with_readable_times(self) -> None:
        job = job_record("no\x00pe", details={"k": "v"}, status="failed", error_type="KeyError")
        for describe_it in (describe, described):
            value = describe_it(as_record(job))
            assert list(value) == list(JOB_COLUMNS)
            assert value["ended_at"] == "2000-01-01T00:00:02+00:00"
            assert value["started_at"] == "2000-01-01T00:00:01+00:00"
            assert value["error_message"] == "no\ufffdpe"
            assert (value["status"], value["attempt"], value["pid"]) == ("failed", 1, 4242)
            assert value["details"] == {"k": "v"}
            json.dumps(value)  # JSON-ready

    def test_a_job_record_with_a_bad_number_is_left_for_the_server_to_refuse(self) -> None:
        """Not an int where the table wants one: NULL, which llama_job refuses (NOT NULL),
        so the record is dead-lettered, never stored with a guess."""
        job = (*job_record()[:11], "soon", *job_record()[12:])
        row, _ = clean_row(as_record(job))  # type: ignore[arg-type]
        assert row[11] is None
        assert describe(as_record(job))["started_at"] is None  # type: ignore[arg-type]

    def test_times_are_microseconds_since_2000_as_for_events(self) -> None:
        now_us = 1_700_000_000_000_000 - PG_EPOCH_US
        job = (now_us, *job_record()[1:])
        assert describe(as_record(job))["ended_at"] == "2023-11-14T22:13:20+00:00"
