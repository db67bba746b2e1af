"""``python -m ddlnl.cli``: the same as ``ddlnl``."""

import sys

from ddlnl.cli import main

sys.exit(main())
