"""Text from the database made safe for a terminal.

Job ids, names, messages and entity ids can come from a queue message anyone could publish.
Printed raw, an ESC sequence retitles or clears the operator's terminal, a CR or a newline
forges lines, and a bidirectional override reorders what is shown. Every such character is
shown as a visible escape instead: ``\\x1b``, ``\\n``, ``\\u202e``.
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

import orjson

__all__ = ["json_text", "visible"]

# C0 controls (TAB included: it would shift columns), DEL, C1 controls, and the Unicode
# bidirectional controls and line/paragraph separators a terminal may honour.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def visible(value: object) -> str:
    """``str(value)`` with every control character shown as an escape; a backslash
    before an escape-looking text is left alone (the text is for reading, not parsing)."""
    return _UNSAFE.sub(_escape, str(value))


# JSON already escapes C0 controls; DEL, C1 and the bidirectional controls it passes
# through with ensure_ascii=False. They can only occur inside JSON strings, where a
# \uXXXX escape means the same character: the output stays valid, equal JSON.
_UNSAFE_IN_JSON = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def json_text(value: Any, *, indented: bool = False) -> str:
    """``value`` as JSON (non-ASCII text kept readable) with no character a terminal acts on.

    Indented, through orjson: the standard library's encoder is pure Python when it indents
    (a tree of 7,000 jobs took 2.8 s); it stays the fallback for what orjson refuses (ints
    beyond 64 bits) and writes the one-line forms. Anything else, a datetime included, is
    written as ``str()`` gives it.
    """
    text = None
    if indented:
        option = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_INDENT_2
        with contextlib.suppress(TypeError):
            text = orjson.dumps(value, default=str, option=option).decode()
    if text is None:
        text = json.dumps(value, default=str, ensure_ascii=False, indent=2 if indented else None)
    return _UNSAFE_IN_JSON.sub(lambda match: f"\\u{ord(match.group()):04x}", text)
