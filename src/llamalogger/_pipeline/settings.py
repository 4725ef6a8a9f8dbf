"""The writer's settings: one frozen value, validated before any thread or connection exists."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Literal

import attrs

from .._errors import ConfigurationError

__all__ = ["DEFAULT_SPILL_MAX_BYTES", "FullPolicy", "Settings"]

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


def _optional_bool(instance: Settings, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, bool):
        raise ConfigurationError(f"{attribute.name} must be True, False or None, not {value!r:.40}")


@attrs.frozen(kw_only=True)
class Settings:
    """How one logger's writer behaves; see the configuration table in README.md."""

    queue_size: int = attrs.field(default=100_000, validator=_positive_int)
    batch_size: int = attrs.field(default=20_000, validator=_positive_int)
    flush_interval: float = attrs.field(default=0.2, validator=_positive_seconds)
    on_full: FullPolicy = attrs.field(default="block", validator=_full_policy)
    block_timeout: float = attrs.field(default=1.0, validator=_positive_seconds)
    exit_timeout: float = attrs.field(default=10.0, validator=_positive_seconds)
    dead_letter_path: Path | None = attrs.field(
        default=None, converter=_to_path, validator=_optional_path
    )
    # None: spilling is off. LlamaLogger turns its ``spill_dir=`` argument (a path, the
    # per-user default, or False) into this.
    spill_dir: Path | None = attrs.field(default=None, converter=_to_path, validator=_optional_path)
    spill_max_bytes: int = attrs.field(default=DEFAULT_SPILL_MAX_BYTES, validator=_positive_int)
    flush_on_outer_job_exit: bool | None = attrs.field(default=None, validator=_optional_bool)
