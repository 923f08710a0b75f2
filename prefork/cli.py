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

from prefork.sockets import Address, parse_address

log = logging.getLogger("prefork.cli")

EXIT_OK = 0
EXIT_START_FAILED = 1
EXIT_USAGE = 2

DESCRIPTION = """\
Serve the WSGI or ASGI application APP ("module:attr", e.g. mysite.wsgi:application) with
a preforking master and N workers (waitress; uvicorn for ASGI), all accepting on one address
(-b, default 127.0.0.1:8000). With --port-per-worker, worker i listens on PORT+i instead, for
nginx or another balancer in front (see --upstream).

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
    parser.add_argument("app", metavar="APP", help='the WSGI or ASGI application, "module:attr"')
    net = parser.add_argument_group("listening")
    net.add_argument(
        "-b",
        "--bind",
        metavar="ADDRESS",
        type=_address,
        action="append",
        help="HOST:PORT or unix:PATH to listen on, shared by every worker (default: 127.0.0.1:8000;"
        " 0.0.0.0:PORT for every interface); repeat it to listen on several",
    )
    net.add_argument("--host", default=None, help="the host of the address (default: 127.0.0.1)")
    net.add_argument("-p", "--port", type=_port, default=None, help="the port of the address (default: 8000)")
    net.add_argument(
        "--port-per-worker",
        action="store_true",
        help="worker i listens on PORT+i instead, for a balancer in front (nginx, see --upstream)",
    )
    net.add_argument("--shared-port", action="store_true", help=argparse.SUPPRESS)  # the default now
    net.add_argument(
        "-w", "--workers", type=_positive_int, default=3, metavar="N", help="number of worker processes (default: 3)"
    )
    net.add_argument(
        "--threads",
        type=_positive_int,
        default=1,
        metavar="N",
        help="request threads per worker (default: 1, one request at a time; WSGI only)",
    )
    net.add_argument(
        "--interface",
        choices=("auto", "wsgi", "asgi"),
        default="auto",
        help="how to call APP: detected (auto, the default; an async callable is ASGI, served by"
        " uvicorn in each worker), or forced",
    )
    proc = parser.add_argument_group("process")
    proc.add_argument("--chdir", metavar="DIR", help="change to DIR before importing the app")
    proc.add_argument(
        "--pid",
        metavar="FILE",
        help="write the master's pid here; `prefork ctl --pid FILE` finds the master"
        " through it. Refused when it names a live process",
    )
    proc.add_argument(
        "-t",
        "--timeout",
        type=_positive_float,
        default=None,
        metavar="S",
        help="kill and replace a worker that does not answer a ping within S seconds (default: off)",
    )
    proc.add_argument(
        "--graceful-timeout",
        type=_positive_float,
        default=30.0,
        metavar="S",
        help="seconds a stopping worker may spend finishing its requests (default: 30)",
    )
    logs = parser.add_argument_group("logging")
    logs.add_argument(
        "--access-logfile",
        metavar="FILE",
        help="log each request, gunicorn's format, to FILE (- for stdout; default: off)",
    )
    logs.add_argument(
        "--error-logfile",
        "--log-file",
        dest="log_file",
        metavar="FILE",
        help="the master's log and the workers' output (- for stdout; default: stderr)",
    )
    logs.add_argument(
        "--log-level",
        default="info",
        type=_log_level,
        metavar="LEVEL",
        help="debug, info, warning or error (default: info)",
    )
    code = parser.add_argument_group("code reloading")
    code.add_argument(
        "--project",
        metavar="PROJECT_FILE",
        help="a projectr definition file (project.py): its files and needs= edges; every"
        " reload (a save with --reload, HUP, `prefork ctl reload`) serves what a fresh start"
        " would, through a new generation of the app",
    )
    code.add_argument(
        "--reload",
        action="store_true",
        help="reload when a file changes: every .py file, template and configuration file"
        " under the project's root (the working directory without --project), new ones too",
    )
    code.add_argument(
        "--reload-timeout",
        type=_positive_float,
        default=5.0,
        metavar="S",
        help="abandon a reload whose imports take longer than S seconds (default: 5)",
    )
    code.add_argument("--no-partial", action="store_true", help="the same as --partial never")
    code.add_argument(
        "--partial",
        choices=("auto", "always", "never"),
        default="auto",
        help="re-execute only the affected modules: where it is cheaper than importing the"
        " project afresh (auto, the default), wherever the changed modules are loaded"
        " (always), or never",
    )
    code.add_argument("--no-trial", action="store_true", help=argparse.SUPPRESS)  # accepted, unused
    code.add_argument(
        "--livereload",
        action="store_true",
        help="development: open HTML pages refresh themselves once a reload is served,"
        " and show a failed reload's file, line and error; needs --reload",
    )
    front = parser.add_argument_group("frontend")
    front.add_argument(
        "--upstream",
        metavar="FILE",
        help="keep an nginx `upstream` block listing the live worker ports in FILE (implies --port-per-worker)",
    )
    front.add_argument(
        "--upstream-reload", metavar="CMD", help='command run when the upstream file changed, e.g. "nginx -s reload"'
    )
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {value}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number")
    return value


def _address(text: str) -> Address:
    try:
        return parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _log_level(text: str) -> str:
    level = text.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise argparse.ArgumentTypeError(f"unknown log level {text!r}")
    return level


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse and cross-check ``prefork APP`` arguments (argparse exits 2 on errors)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.bind is not None and (args.host is not None or args.port is not None):
        parser.error("give the address either as -b/--bind or as --host/--port, not both")
    args.addresses = args.bind or [Address(args.host or "127.0.0.1", 8000 if args.port is None else args.port)]
    args.address = args.addresses[0]
    if args.port_per_worker and args.shared_port:
        parser.error("--port-per-worker and --shared-port contradict each other")
    if args.port_per_worker and (args.address.path is not None or len(args.addresses) > 1):
        parser.error("--port-per-worker needs one HOST:PORT address (not a Unix socket, not several -b)")
    if ":" not in args.app:
        parser.error(f'APP must be "module:attr", not {args.app!r}')
    if args.upstream:
        args.port_per_worker = True  # the upstream file lists each worker's own port
    if args.upstream_reload and not args.upstream:
        parser.error("--upstream-reload needs --upstream")
    if args.livereload and not args.reload:
        parser.error("--livereload needs --reload: it is for development only")
    last = args.address.port + args.workers - 1
    if args.port_per_worker and args.address.port and last > 65535:
        parser.error(f"ports {args.address.port}..{last} go past 65535")
    return args


def configure_logging(args: argparse.Namespace) -> None:
    """Send the ``prefork`` and ``projectr`` logs to --error-logfile or stderr at --log-level.

    Only our own loggers: the app's logging (Django's LOGGING, a Flask app's handlers) stays as the
    app configures it, so no line comes out twice.
    """
    handler: logging.Handler
    if args.log_file and args.log_file != "-":
        handler = logging.FileHandler(args.log_file)
    else:
        handler = logging.StreamHandler(sys.stdout if args.log_file == "-" else sys.stderr)
    handler.setFormatter(LogFormatter(colour=_wants_colour(handler)))
    for name in ("prefork", "projectr"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(args.log_level)
        logger.propagate = False


def _wants_colour(handler: logging.Handler) -> bool:
    """Colour for a terminal, never for a file or a pipe; NO_COLOR turns it off (no-color.org)."""
    stream = getattr(handler, "stream", None)
    isatty = getattr(stream, "isatty", None)
    return (
        not isinstance(handler, logging.FileHandler)
        and not os.environ.get("NO_COLOR")
        and callable(isatty)
        and bool(isatty())
    )


class LogFormatter(logging.Formatter):
    """``time LEVEL logger: message``, the level coloured on a terminal."""

    COLOURS = {"DEBUG": "2", "INFO": "32", "WARNING": "33", "ERROR": "31", "CRITICAL": "1;31"}

    def __init__(self, colour: bool = False) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.colour = colour

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        if not self.colour:
            return super().formatMessage(record)
        code = self.COLOURS.get(record.levelname, "0")
        plain = record.levelname
        record.levelname = f"\033[{code}m{plain}\033[0m"
        try:
            return super().formatMessage(record)
        finally:
            record.levelname = plain


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
        bind=[str(address) for address in args.addresses],
        shared_port=not args.port_per_worker,
        threads=args.threads,
        interface=args.interface,
        pid_file=args.pid,
        graceful_timeout=args.graceful_timeout,
        timeout=args.timeout,
        stderr=sys.stdout if args.log_file == "-" else args.log_file or sys.stderr,
        access_log=sys.stdout if args.access_logfile == "-" else args.access_logfile,
    )
    if args.upstream:
        kwargs.update(_upstream_hooks(args))
    return kwargs


def _upstream_hooks(args: argparse.Namespace) -> dict[str, Any]:
    """Hooks that keep the nginx upstream file listing the live worker ports (prefork.upstream)."""
    from prefork.upstream import NginxUpstream

    host = args.address.host
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
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
        server = server_class(
            project=project,
            app=args.app,
            reload_timeout=args.reload_timeout,
            partial="never" if args.no_partial else args.partial,
            **kwargs,
        )
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
        raise StartError(_hint(f"cannot import the app {spec}: {type(exc).__name__}: {exc}", spec)) from exc


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
        raise StartError(_bind_failure(exc, args)) from exc
    if not server.stopped_cleanly:
        log.warning("stopped, but some workers had to be killed (SIGKILL) after their deadline")
        return EXIT_START_FAILED
    return EXIT_OK


def _hint(message: str, app: str) -> str:
    """Add what to do when the app's module cannot be found from here."""
    top = app.partition(":")[0].split(".")[0]
    if f"No module named '{top}'" in message:
        return f"{message}: run it from the folder that contains {top}/ (or {top}.py), or pass --chdir"
    return message


def _bind_failure(exc: OSError, args: argparse.Namespace) -> str:
    """One line for a listening socket that could not be had, with what to do."""
    reason = exc.strerror if isinstance(exc.strerror, str) and exc.strerror else str(exc)
    if exc.errno != errno.EADDRINUSE:
        return reason
    slot = getattr(exc, "slot", None)
    if args.port_per_worker and slot:
        port = args.address.port + slot
        return (
            f"port {port} is in use (worker {slot} of {args.workers} listens on PORT+{slot}"
            " with --port-per-worker): choose another -b/--port, or stop what listens there"
        )
    if len(args.addresses) > 1:  # the reason names the address: "cannot listen on HOST:PORT: ..."
        return f"{reason}: stop what listens there, or choose another -b/--bind"
    return f"{args.address} is in use: stop what listens there, or choose another -b/--bind"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``prefork`` console script and ``python -m prefork``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "ctl":
        from prefork.ctl import ctl_main

        return ctl_main(argv[1:])
    args = parse_args(argv)
    configure_logging(args)
    if args.chdir:
        try:
            os.chdir(args.chdir)
        except OSError as exc:
            print(f"prefork: cannot change to {args.chdir}: {exc.strerror}", file=sys.stderr)
            return EXIT_START_FAILED
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # `prefork app:application` finds app.py here, as python -m does
    try:
        return serve(args)
    except StartError as exc:
        print(f"prefork: {exc}", file=sys.stderr)
        return EXIT_START_FAILED
    except KeyboardInterrupt:
        return EXIT_OK
