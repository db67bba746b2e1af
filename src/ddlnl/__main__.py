"""``python -m ddlnl``: the ``ddlnl`` command line."""

import sys

from ddlnl.cli import main

if __name__ == "__main__":
    sys.exit(main())
