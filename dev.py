"""Set up and run the project with nothing but Python 3.11+.

    python3 dev.py demo        create .venv if needed, then run the demo import
    python3 dev.py test [ARGS] create .venv if needed, then run the whole test suite

The virtual environment is (re)built whenever pyproject.toml changes. Without
LLAMALOG_DSN / LLAMALOG_TEST_DSN both commands use an embedded PostgreSQL from a
wheel, so no database needs to be installed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".llamalog-installed"


def _venv_python() -> Path:
    return VENV / ("Scripts" if os.name == "nt" else "bin") / "python"


def ensure_venv() -> Path:
    """Create .venv and install the project with its extras, once per pyproject.toml."""
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    python = _venv_python()
    if python.exists() and STAMP.exists() and STAMP.read_text() == wanted:
        return python
    if not python.exists():
        print("creating .venv ...", flush=True)
        venv.create(VENV, with_pip=True)
    print("installing llamalogger[embedded,dev] into .venv ...", flush=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "--editable", f"{ROOT}[embedded,dev]"], check=True)
    STAMP.write_text(wanted)
    return python


def main(argv: list[str]) -> int:
    if sys.version_info < (3, 11):
        print("llamalogger needs Python 3.11 or newer", file=sys.stderr)
        return 2
    if not argv or argv[0] not in {"demo", "test", "venv"}:
        print(__doc__, file=sys.stderr)
        return 2
    python = ensure_venv()
    command, rest = argv[0], argv[1:]
    if command == "venv":
        return 0
    if command == "demo":
        args = [str(python), "-m", "llamalogger.cli", "demo", *rest]
    else:
        args = [str(python), "-m", "pytest", *rest]
    return subprocess.run(args, cwd=ROOT, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
