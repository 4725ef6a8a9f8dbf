"""Every ``python`` snippet in README.md and docs/*.md runs, against every test server.

The snippets of one file run in order in one namespace, with ``LLAMALOG_DSN`` and
``LLAMALOG_SCHEMA`` pointing at a freshly migrated schema, so they read like a session.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SNIPPET = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def snippets(path: Path) -> list[str]:
    return SNIPPET.findall(path.read_text(encoding="utf-8"))


def test_the_documents_have_snippets() -> None:
    assert len(snippets(ROOT / "README.md")) >= 1
    assert sum(len(snippets(path)) for path in DOCUMENTS) >= 5


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda path: path.name)
def test_snippets_run(path: Path, dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMALOG_DSN", dsn)
    monkeypatch.setenv("LLAMALOG_SCHEMA", schema)
    namespace: dict[str, object] = {"__name__": f"docs_{path.stem}"}
    for number, code in enumerate(snippets(path), start=1):
        compiled = compile(code, f"{path.name} snippet {number}", "exec")
        exec(compiled, namespace)
    logger = namespace.get("logger")
    if logger is not None:
        logger.close()  # type: ignore[attr-defined]
