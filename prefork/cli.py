"""The ``prefork`` command line: serve a WSGI app with N workers, or talk to a running master.

``prefork APP [options]`` runs the master in this process (it is the master) until it is stopped;
``prefork ctl ...`` is the operator client (see :mod:`prefork.ctl`). Exit status: 0 after a clean
stop, 2 for bad arguments, 1 with a one-line reason for anything that prevents the start (the
port is in use, the pid file names a live process, the app cannot be imported).
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("prefork.cli")

EXIT_OK = 0
EXIT_START_FAILED = 1
EXIT_USAGE = 2

DESCRIPTION = """\
Serve the WSGI application APP ("module:attr", e.g. myproject.app:application) with a
preforking master and N waitress workers. Worker i listens on PORT+i (put nginx or another
balancer in front, see --upstream), or with --shared-port all workers accept on PORT.

Signals: TERM/INT stop now, QUIT stops gracefully, HUP reloads (rolls every worker onto the
current code), USR2 reloads fully (with --reload: the third-party modules too), TTIN/TTOU
add/remove one worker, USR1 reopens log files.

Operators: `prefork ctl --pid FILE status|reload [--full]|workers N|stats|command NAME [ARGS]`
talks to a running master through the control socket next to its pid file.
"""

EPILOG = """\
exit status: 0 after a clean stop; 1 when the server cannot start (port in use, live pid file,
app import failure), with a one-line reason on stderr, or when a stop had to kill workers; 2 for bad
arguments.
"""


class StartError(Exception):
    """Something that prevents the server from starting; its message is the one-line reason."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (the usage is one --help away)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """Return the parser for ``prefork APP``."""
    parser = _Parser(
        prog="prefork",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("app", metavar="APP", help='the WSGI application, "module:attr"')
    net = parser.add_argument_group("listening")
    net.add_argument("-w", "--workers", type=_positive_int, default=3, metavar="N",
                     help="number of worker processes (default: 3)")
    net.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (default: 127.0.0.1; 0.0.0.0 for every interface)")
    net.add_argument("-p", "--port", type=_port, default=8000,
                     help="port of worker 0; worker i listens on PORT+i (default: 8000)")
    net.add_argument("--bind", metavar="HOST:PORT", type=_bind,
                     help="host and port in one flag, gunicorn style; overrides --host/--port")
    net.add_argument("--shared-port", action="store_true",
                     help="all workers accept on PORT instead of PORT+i (no balancer needed)")
    net.add_argument("--threads", type=_positive_int, default=1, metavar="N",
                     help="request threads per worker (default: 1, one request at a time)")
    proc = parser.add_argument_group("process")
    proc.add_argument("--pid", metavar="FILE",
                      help="write the master's pid here; `prefork ctl --pid FILE` finds the master"
                      " through it. Refused when it names a live process")
    proc.add_argument("--log-file", metavar="FILE",
                      help="append the master's log and the workers' output here (default: stderr)")
    proc.add_argument("--log-level", default="info", type=_log_level, metavar="LEVEL",
                      help="debug, info, warning or error (default: info)")
    proc.add_argument("--graceful-timeout", type=_positive_float, default=30.0, metavar="S",
                      help="seconds a stopping worker may spend finishing its requests (default: 30)")
    proc.add_argument("--timeout", type=_positive_float, default=None, metavar="S",
                      help="kill and replace a worker that does not answer a ping within S seconds"
                      " (default: off)")
    code = parser.add_argument_group("code reloading")
    code.add_argument("--project", metavar="PROJECT_FILE",
                      help="a projectr definition file (project.py): its files and needs= edges; every"
                      " reload (a save with --reload, HUP, `prefork ctl reload`) serves what a fresh start"
                      " would, through a new generation of the app")
    code.add_argument("--reload", action="store_true",
                      help="reload when a file changes: every .py file, template and configuration file"
                      " under the project's root (the working directory without --project), new ones too")
    code.add_argument("--reload-timeout", type=_positive_float, default=5.0, metavar="S",
                      help="abandon a reload whose imports take longer than S seconds (default: 5)")
    code.add_argument("--no-partial", action="store_true",
                      help="the same as --partial never")
    code.add_argument("--partial", choices=("auto", "always", "never"), default="auto",
                      help="re-execute only the affected modules: where it is cheaper than importing the"
                      " project afresh (auto, the default), wherever the changed modules are loaded"
                      " (always), or never")
    code.add_argument("--no-trial", action="store_true", help=argparse.SUPPRESS)  # accepted, unused
    code.add_argument("--livereload", action="store_true",
                      help="development: open HTML pages refresh themselves once a reload is served,"
                      " and show a failed reload's file, line and error; needs --reload")
    front = parser.add_argument_group("frontend")
    front.add_argument("--upstream", metavar="FILE",
                       help="keep an nginx `upstream` block listing the live worker ports in FILE")
    front.add_argument("--upstream-reload", metavar="CMD",
                       help='command run when the upstream file changed, e.g. "nginx -s reload"')
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {value}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number")
    return value


def _bind(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), _port(port)


def _log_level(text: str) -> str:
    level = text.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise argparse.ArgumentTypeError(f"unknown log level {text!r}")
    return level


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse and cross-check ``prefork APP`` arguments (argparse exits 2 on errors)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.bind:
        args.host, args.port = args.bind
    if ":" not in args.app:
        parser.error(f'APP must be "module:attr", not {args.app!r}')
    if args.upstream_reload and not args.upstream:
        parser.error("--upstream-reload needs --upstream")
    if args.livereload and not args.reload:
        parser.error("--livereload needs --reload: it is for development only")
    if args.port + (1 if args.shared_port else args.workers) - 1 > 65535:
        parser.error(f"ports {args.port}..{args.port + args.workers - 1} go past 65535")
    return args


def configure_logging(args: argparse.Namespace) -> None:
    """Send the ``prefork`` and ``projectr`` logs to --log-file or stderr at --log-level."""
    handler: logging.Handler
    if args.log_file:
        handler = logging.FileHandler(args.log_file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(args.log_level)


def check_pid_file(path: str | None) -> None:
    """Refuse to start when the pid file names a live process (the master re-checks atomically)."""
    from prefork.pidfile import process_alive, read_pid

    pid = read_pid(path) if path else None
    if pid is not None and pid != os.getpid() and process_alive(pid):
        raise StartError(f"pid file {path} names a live process {pid}; is a master already running?")


def server_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of Server/ProjectrServer that come straight from flags."""
    kwargs: dict[str, Any] = dict(
        workers=args.workers,
        host=args.host,
        port=args.port,
        shared_port=args.shared_port,
        threads=args.threads,
        pid_file=args.pid,
        graceful_timeout=args.graceful_timeout,
        timeout=args.timeout,
        stderr=args.log_file or sys.stderr,
    )
    if args.upstream:
        kwargs.update(_upstream_hooks(args))
    return kwargs


def _upstream_hooks(args: argparse.Namespace) -> dict[str, Any]:
    """Hooks that keep the nginx upstream file listing the live worker ports (prefork.upstream)."""
    from prefork.upstream import NginxUpstream

    host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    upstream = NginxUpstream(args.upstream, host=host, reload_command=args.upstream_reload or None)
    return upstream.hooks()


def load_project(path: str) -> Any:
    """Read the project definition file; raise StartError naming file:line on failure (master).

    Only the definition runs here: the project's modules are imported by generation 0.
    """
    from projectr import LoadError, Project, ProjectError

    try:
        return Project.from_file(path)
    except LoadError as exc:
        raise StartError(f"cannot read project file {path}: {exc}") from exc
    except (OSError, ProjectError, SyntaxError) as exc:
        raise StartError(f"cannot read project file {path}: {exc}") from exc


def build_server(args: argparse.Namespace) -> Any:
    """Create the server the flags ask for; raise StartError when the app cannot be loaded."""
    kwargs = server_kwargs(args)
    if args.project or args.reload:
        from prefork.discover import discover_project
        from prefork.server.projectr import ProjectrServer

        server_class: type[ProjectrServer] = ProjectrServer
        if args.livereload:
            from prefork.livereload import LiveReloadProjectrServer

            server_class = LiveReloadProjectrServer
        project = load_project(args.project) if args.project else discover_project(args.app)
        server = server_class(project=project, app=args.app, reload_timeout=args.reload_timeout,
                              partial="never" if args.no_partial else args.partial, **kwargs)
        if args.reload:
            server.watch(project.watch_changes())
        return server
    from prefork.apps import resolve_app
    from prefork.server import Server

    app = _check_app(lambda: resolve_app(args.app), args.app)
    return Server(app=app, **kwargs)


def _check_app(resolve: Any, spec: str) -> Any:
    """Resolve the app now, so that an app that cannot be imported stops the start (master)."""
    try:
        return resolve()
    except Exception as exc:  # noqa: BLE001 - any import-time error is the app's, report it
        raise StartError(f"cannot import the app {spec}: {type(exc).__name__}: {exc}") from exc


def serve(args: argparse.Namespace) -> int:
    """Run the master until it stops; return the exit status."""
    from prefork.pidfile import PidFileError
    from prefork.server.projectr import AppLoadError

    check_pid_file(args.pid)
    server = build_server(args)
    try:
        server.start()
    except AppLoadError as exc:
        raise StartError(_hint(str(exc), args.app)) from exc
    except PidFileError as exc:
        raise StartError(str(exc)) from exc
    except OSError as exc:
        # BindError's text names the exact address ("cannot listen on 127.0.0.1:8001: ...").
        reason = exc.strerror if isinstance(exc.strerror, str) and exc.strerror else str(exc)
        if exc.errno == errno.EADDRINUSE and not reason.startswith("cannot listen"):
            reason = f"cannot listen on {args.host}:{args.port}: address already in use"
        raise StartError(reason) from exc
    if not server.stopped_cleanly:
        log.warning("stopped, but some workers had to be killed (SIGKILL) after their deadline")
        return EXIT_START_FAILED
    return EXIT_OK


def _hint(message: str, app: str) -> str:
    """Add what to do when the app's module cannot be found from here."""
    top = app.partition(":")[0].split(".")[0]
    if f"No module named '{top}'" in message:
        return f"{message} (run it from the folder that contains {top}/ or {top}.py)"
    return message


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``prefork`` console script and ``python -m prefork``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "ctl":
        from prefork.ctl import ctl_main

        return ctl_main(argv[1:])
    args = parse_args(argv)
    configure_logging(args)
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # `prefork app:application` finds app.py here, as python -m does
    try:
        return serve(args)
    except StartError as exc:
        print(f"prefork: {exc}", file=sys.stderr)
        return EXIT_START_FAILED
    except KeyboardInterrupt:
        return EXIT_OK
