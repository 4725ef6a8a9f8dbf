"""A logger's settings: one frozen value, validated before any thread or connection exists.

Every default is written here and nowhere else: ``LlamaLogger`` passes on only what its
caller gave (``Settings.given``), and shows these defaults in its signature (``DEFAULT``).
"""

from __future__ import annotations

import enum
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import attrs

from .._errors import ConfigurationError

__all__ = ["DEFAULT", "DEFAULT_SPILL_MAX_BYTES", "FullPolicy", "Settings", "Spill"]

FullPolicy = Literal["block", "drop"]

DEFAULT_SPILL_MAX_BYTES = 1 << 30  # 1 GiB


def _positive_int(instance: Settings, attribute: attrs.Attribute[Any], value: object) -> None:
    if type(value) is not int or value < 1:
        raise ConfigurationError(
            f"{attribute.name} must be an int of at least 1, not {value!r:.40}"
        )


def _positive_seconds(instance: Settings, attribute: attrs.Attribute[Any], value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigurationError(
            f"{attribute.name} must be a positive number of seconds, not {value!r:.40}"
        )


def _full_policy(instance: Settings, attribute: attrs.Attribute[Any], value: object) -> None:
    if value not in ("block", "drop"):
        raise ConfigurationError(f"on_full must be 'block' or 'drop', not {value!r:.40}")


def _to_path(value: object) -> object:
    return Path(value) if isinstance(value, str | os.PathLike) else value


def _optional_path(instance: Settings, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, Path):
        raise ConfigurationError(f"{attribute.name} must be a path or None, not {value!r:.40}")


class Spill(enum.Enum):
    """The spill choices that are not a path of the caller's own."""

    DEFAULT = "the per-user default directory"  # one per target database and schema
    OFF = "off"  # no spilling: during an outage events wait in memory only


def _spill_choice(value: object) -> object:
    # LlamaLogger's documented spill_dir values: None or True for the per-user default,
    # False for none, or a path.
    if value is None or value is True:
        return Spill.DEFAULT
    if value is False:
        return Spill.OFF
    return _to_path(value)


def _spill_dir(instance: Settings, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, Path | Spill):
        raise ConfigurationError(
            f"spill_dir must be a path, False (no spilling) or None (the per-user "
            f"default), not {value!r:.40}"
        )


def _optional_bool(instance: Settings, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, bool):
        raise ConfigurationError(f"{attribute.name} must be True, False or None, not {value!r:.40}")


@attrs.frozen(kw_only=True)
class Settings:
    """How one logger behaves; see the configuration table in README.md."""

    queue_size: int = attrs.field(default=100_000, validator=_positive_int)
    batch_size: int = attrs.field(default=20_000, validator=_positive_int)
    flush_interval: float = attrs.field(default=0.2, validator=_positive_seconds)
    on_full: FullPolicy = attrs.field(default="block", validator=_full_policy)
    block_timeout: float = attrs.field(default=1.0, validator=_positive_seconds)
    exit_timeout: float = attrs.field(default=10.0, validator=_positive_seconds)
    dead_letter_path: Path | None = attrs.field(
        default=None, converter=_to_path, validator=_optional_path
    )
    # Where batches wait while the database is unreachable: a path, the per-user default
    # directory for the target (Spill.DEFAULT; also given as None or True), or Spill.OFF
    # (also given as False).
    spill_dir: Path | Spill = attrs.field(
        default=Spill.DEFAULT, converter=_spill_choice, validator=_spill_dir
    )
    spill_max_bytes: int = attrs.field(default=DEFAULT_SPILL_MAX_BYTES, validator=_positive_int)
    # None: deliver at the end of the outermost job in a forked child, not in the parent.
    flush_on_outer_job_exit: bool | None = attrs.field(default=None, validator=_optional_bool)
    # Leaving a job by an exception logs one FAILED event, unless the job logged one.
    log_failed_jobs: bool = attrs.field(default=True, converter=bool)

    @classmethod
    def given(cls, **options: object) -> Settings:
        """Settings from ``options``, leaving out those the caller left at ``DEFAULT``:
        the defaults above apply to what the caller did not pass."""
        return cls(**{k: v for k, v in options.items() if not _left_to_settings(k, v)})  # type: ignore[arg-type]


class _Default:
    """Marks a value in a signature as "not given": ``DEFAULT`` makes one of the
    default's own type (an ``int`` stays an ``int`` for code that reads the signature)."""

    __slots__ = ()


class _DefaultInt(_Default, int):
    __slots__ = ()


class _DefaultFloat(_Default, float):
    __slots__ = ()


class _DefaultStr(_Default, str):
    __slots__ = ()


class _DefaultBool(_Default, int):  # bool cannot be subclassed; this one shows as a bool
    __slots__ = ()

    def __repr__(self) -> str:
        return repr(bool(self))


_MARKS: dict[type, Callable[[Any], object]] = {
    bool: _DefaultBool,
    int: _DefaultInt,
    float: _DefaultFloat,
    str: _DefaultStr,
}


def _left_to_settings(name: str, value: object) -> bool:
    if isinstance(value, _Default):
        return True
    # None is the caller's word for the default where it is the default: no dead-letter
    # file, spill_dir's per-user directory, flush_on_outer_job_exit's own choice.
    return value is None and getattr(attrs.fields(Settings), name).default in (None, Spill.DEFAULT)


class _Defaults:
    """``DEFAULT.queue_size`` and so on: keyword defaults that leave the option to
    ``Settings`` (``Settings.given`` leaves them out) and show its default."""

    def __getattr__(self, name: str) -> Any:
        value = getattr(attrs.fields(Settings), name).default
        if value is None or value is Spill.DEFAULT:
            return None
        return _MARKS[type(value)](value)


DEFAULT = _Defaults()
