"""`python -m projectr`: the same as the `projectr` console script."""

import sys

from .cli import main

sys.exit(main())
