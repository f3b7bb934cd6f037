"""``python -m tools.server``: see :mod:`tools.server.cli`."""

import sys

from tools.server.cli import main

sys.exit(main())
