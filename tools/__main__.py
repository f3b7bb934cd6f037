"""``python -m tools`` is the same as ``python -m tools.server``."""

import sys

from tools.server.cli import main

sys.exit(main())
