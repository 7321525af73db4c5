"""``python -m context_framework`` is the ``ctx`` command."""

import sys

from .cli import main

sys.exit(main())
