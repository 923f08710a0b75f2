"""``python -m prefork.ctl ...``: the same as ``prefork ctl ...``."""

import sys

from prefork.ctl.client import ctl_main

if __name__ == "__main__":  # importing the module (a test walking the package) must not exit
    sys.exit(ctl_main(sys.argv[1:]))
