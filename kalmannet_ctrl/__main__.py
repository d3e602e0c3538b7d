"""``python -m kalmannet_ctrl``: the same as the ``kalmannet-ctrl`` command."""

from .cli import main

raise SystemExit(main())
