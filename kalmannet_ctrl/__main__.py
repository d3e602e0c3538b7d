"""``python -m kalmannet_ctrl``: the same as the ``kalmannet-ctrl`` command."""

import sys

from .cli import main

sys.exit(main())
