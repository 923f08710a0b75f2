"""python -m bench.refapp [--vendor-cost S] [--vendor-mb MB] [--modules N] [--unrelated N] OUT_DIR"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from bench.refapp import generate


def main() -> None:
    """Generate the reference application and print where it went (JSON)."""
    parser = argparse.ArgumentParser(prog="python -m bench.refapp", description=__doc__)
    parser.add_argument("out", type=Path, help="folder to write vendor/ and tree/ into")
    parser.add_argument("--vendor-cost", type=float, default=1.0, help="CPU seconds to import the vendor layer")
    parser.add_argument("--vendor-mb", type=float, default=24.0, help="memory the vendor layer holds")
    parser.add_argument("--modules", type=int, default=20, help="project-layer modules (>= 20)")
    parser.add_argument("--unrelated", type=int, default=5000, help="unrelated files in the tree")
    args = parser.parse_args()
    app = generate(args.out, args.vendor_cost, args.vendor_mb, args.modules, args.unrelated)
    print(json.dumps(asdict(app), indent=1))


if __name__ == "__main__":
    main()
