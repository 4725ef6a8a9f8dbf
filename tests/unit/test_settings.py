"""Settings are the one home of every default; LlamaLogger passes on only what it was given."""

from __future__ import annotations

import inspect
from pathlib import Path

import attrs
import pytest

from llamalogger import ConfigurationError, LlamaLogger
from llamalogger._pipeline import DEFAULT, Settings, Spill

OPTIONS = [field.name for field in attrs.fields(Settings)]


@pytest.mark.parametrize("name", OPTIONS)
def test_the_logger_signature_shows_the_settings_default(name: str) -> None:
    """help(LlamaLogger) shows each default as Settings has it (spill_dir's in the
    caller's words: None for the per-user directory)."""
    shown = inspect.signature(LlamaLogger).parameters[name].default
    default = getattr(attrs.fields(Settings), name).default
    assert repr(shown) == repr(None if default is Spill.DEFAULT else default)


def test_options_left_out_are_left_to_settings() -> None:
    given = Settings.given(queue_size=5, batch_size=DEFAULT.batch_size, spill_dir=DEFAULT.spill_dir)
    assert given == Settings(queue_size=5)
    assert Settings.given() == Settings()


@pytest.mark.parametrize(
    ("value", "choice"),
    [
        (None, Spill.DEFAULT),
        (True, Spill.DEFAULT),
        (False, Spill.OFF),
        ("spill/here", Path("spill/here")),
        (Path("/tmp/s"), Path("/tmp/s")),
    ],
)
def test_spill_dir_as_documented_becomes_an_explicit_choice(value: object, choice: object) -> None:
    assert Settings(spill_dir=value).spill_dir == choice  # type: ignore[arg-type]


def test_a_spill_dir_of_another_type_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="spill_dir must be a path, False"):
        Settings(spill_dir=42)  # type: ignore[arg-type]


def test_the_signature_defaults_work_as_the_values_they_show() -> None:
    """Code that reads LlamaLogger's signature (benchmarks/bench_writer.py does) gets
    values of the documented types."""
    parameters = inspect.signature(LlamaLogger).parameters
    assert int(parameters["batch_size"].default) == Settings().batch_size
    assert float(parameters["flush_interval"].default) == Settings().flush_interval
    assert parameters["on_full"].default == "block"
    assert parameters["log_failed_jobs"].default == True  # noqa: E712 - an int-based marker
    assert parameters["dead_letter_path"].default is None


def test_none_is_left_to_settings_only_where_it_is_the_default() -> None:
    assert Settings.given(dead_letter_path=None, flush_on_outer_job_exit=None) == Settings()
    with pytest.raises(ConfigurationError, match="queue_size"):
        Settings.given(queue_size=None)
