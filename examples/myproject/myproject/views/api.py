"""JSON endpoints: what tests and monitoring read."""
import json
import os
from dataclasses import dataclass, field

from myproject.services import catalog
from myproject.version import VERSION


@dataclass
class Response:
    """What a view returns; app.py turns it into a WSGI response."""

    body: str
    status: str = "200 OK"
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


def worker_info(environ: dict) -> dict:
    """Which worker answers: pid, port, and the reload generation it was forked in.

    ProjectrServer sets PREFORK_GENERATION in each worker before it serves.
    """
    return {
        "pid": os.getpid(),
        "port": int(environ.get("SERVER_PORT") or 0),
        "generation": int(os.environ.get("PREFORK_GENERATION", "0")),
    }


def status(environ: dict) -> Response:
    """Worker identity plus the code version it runs."""
    info = worker_info(environ)
    info.update(version=VERSION, label=catalog.LABEL, currency=catalog.currency())
    return Response(json.dumps(info))


def items(environ: dict) -> Response:
    """The catalogue as JSON."""
    payload = [
        {"sku": item.sku, "name": item.name, "price": item.price(catalog.currency())}
        for item in catalog.items()
    ]
    return Response(json.dumps(payload))


ROUTES = {"/status.json": status, "/items.json": items}
