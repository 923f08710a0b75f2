"""``python -m prefork.ctl ...``: the same as ``prefork ctl ...``."""

import sys

from prefork.ctl.client import ctl_main

sys.exit(ctl_main(sys.argv[1:]))
