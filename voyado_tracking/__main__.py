"""``python -m voyado_tracking``: the ``voyado-tracking`` command line."""

import sys

from .cli import main

sys.exit(main())
