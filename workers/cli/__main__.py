"""``python -m workers.cli`` is ``idwatch``."""

import sys

from workers.cli import app

sys.exit(app())
