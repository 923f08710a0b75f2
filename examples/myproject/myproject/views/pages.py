"""HTML pages."""
import functools
import html
import os
from pathlib import Path

from myproject import settings
from myproject.services import catalog
from myproject.version import VERSION
from myproject.views.api import Response, worker_info

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


@functools.lru_cache(maxsize=None)
def template(name: str) -> str:
    """Read a template once per worker process (a change to it re-forks the workers)."""
    return (TEMPLATES / name).read_text(encoding="utf-8")


def home(environ: dict) -> Response:
    """The home page: the catalogue, and which worker served it with which code."""
    info = worker_info(environ)
    rows = "\n".join(
        f"<tr><td>{html.escape(item.name)}</td><td>{item.price(catalog.currency())}</td></tr>"
        for item in catalog.items()
    )
    body = template("page.html").format(
        site=html.escape(settings.SITE_NAME),
        label=html.escape(catalog.LABEL),
        rows=rows,
        version=html.escape(VERSION),
        pid=info["pid"],
        port=info["port"],
        generation=info["generation"],
        ppid=os.getppid(),
    )
    return Response(body, content_type="text/html; charset=utf-8")


ROUTES = {"/": home}
