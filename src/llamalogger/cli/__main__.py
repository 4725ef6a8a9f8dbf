"""``python -m llamalogger.cli``: the same as the ``llamalog`` command."""

import sys

from . import main

sys.exit(main())
