"""Schema administration lives in llamalogger.schema; the old top-level names still work, warned."""

from __future__ import annotations

import importlib

import pytest

import llamalogger
from llamalogger import schema

MOVED = ["BackfillReport", "MigrateResult", "backfill_root_job_id", "current_version", "migrate"]


@pytest.mark.parametrize("name", MOVED)
def test_old_top_level_name_warns_and_is_the_same_object(name: str) -> None:
    with pytest.warns(DeprecationWarning, match=rf"llamalogger\.schema\.{name}"):
        old = getattr(llamalogger, name)
    assert old is getattr(schema, name)


def test_from_import_of_an_old_name_warns() -> None:
    with pytest.warns(DeprecationWarning, match="use llamalogger.schema.migrate"):
        from llamalogger import migrate  # noqa: F401


def test_the_logging_api_no_longer_lists_schema_administration() -> None:
    assert not set(MOVED) & set(llamalogger.__all__)
    assert set(MOVED) <= set(schema.__all__)


def test_unknown_names_are_still_attribute_errors() -> None:
    with pytest.raises(AttributeError):
        llamalogger.no_such_name


def test_every_name_in_schema_all_exists() -> None:
    module = importlib.reload(schema)
    assert all(hasattr(module, name) for name in module.__all__)
