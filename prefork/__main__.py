"""``python -m prefork``: the same command line as the ``prefork`` console script."""

import sys

from prefork.cli import main

if __name__ == "__main__":
    sys.exit(main())
