"""werkzeug_serve.py PORT RELOADER MODULE:ATTR: serve a WSGI app with werkzeug's development reloader.

Run as a script (not -m) so werkzeug's reloader can re-execute it as it does for users' apps.
"""
import importlib
import sys

from werkzeug.serving import run_simple


def main() -> None:
    """Import the app (as a user's script would) and run werkzeug with its reloader."""
    port, reloader, target = sys.argv[1], sys.argv[2], sys.argv[3]
    module, attr = target.split(":")
    application = getattr(importlib.import_module(module), attr)
    run_simple("127.0.0.1", int(port), application, use_reloader=True, reloader_type=reloader)


if __name__ == "__main__":
    main()
