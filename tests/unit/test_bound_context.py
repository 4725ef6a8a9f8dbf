"""_bound_context: which registry a logger reads, and what a merge adds."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog.contextvars
from structlog.contextvars import bind_contextvars, clear_contextvars

from llamalogger import _bound_context


@pytest.fixture(autouse=True)
def no_bound_context() -> Iterator[None]:
    clear_contextvars()
    yield
    clear_contextvars()


def test_the_registry_is_structlogs_own_dict() -> None:
    """Enabled, the logger reads structlog's registry itself, so a key bound later is seen."""
    assert _bound_context.registry(True) is structlog.contextvars._CONTEXT_VARS


def test_switched_off_the_registry_is_empty() -> None:
    bind_contextvars(request_id="req-1")
    registry = _bound_context.registry(False)
    assert registry == {}
    assert not registry


def test_a_structlog_without_the_registry_means_no_bound_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If structlog stops keeping ``_CONTEXT_VARS``, direct calls get no bound values
    instead of failing."""
    monkeypatch.delattr(structlog.contextvars, "_CONTEXT_VARS")
    assert _bound_context.registry(True) == {}


def test_merge_adds_bound_values_under_explicit_ones() -> None:
    bind_contextvars(request_id="req-2", user="importer", entity=("album", 1), _private=1)
    details = {"user": "explicit"}
    merged = _bound_context.merged(_bound_context.registry(True), details)
    assert merged is details
    assert merged == {"user": "explicit", "request_id": "req-2"}


def test_merge_sees_keys_bound_after_its_last_read() -> None:
    """The registry only grows; a new key makes the merge read it again."""
    registry = _bound_context.registry(True)
    bind_contextvars(request_id="req-3")
    assert _bound_context.merged(registry, {}) == {"request_id": "req-3"}
    bind_contextvars(brand_new_key_for_this_test=1)
    assert _bound_context.merged(registry, {}) == {
        "request_id": "req-3",
        "brand_new_key_for_this_test": 1,
    }
    clear_contextvars()
    assert _bound_context.merged(registry, {}) == {}
