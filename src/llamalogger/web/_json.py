"""JSON responses of the web view.

orjson first (fast for a tree of 50,000 jobs); the standard library's encoder for what
orjson refuses (details nested deeper than its 254 levels, ints beyond 64 bits). Times are
ISO 8601 strings; anything else unknown is written as ``str()`` gives it.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["json_bytes"]


def json_bytes(value: Any) -> bytes:
    try:
        return orjson.dumps(value, default=str)
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(value, default=str, ensure_ascii=False).encode()
