"""The WSGI entry point: `myproject.app:application`."""
from myproject.views import api, pages
from myproject.views.api import Response

ROUTES = {**pages.ROUTES, **api.ROUTES}


def not_found(environ: dict) -> Response:
    """Answer paths no view claims."""
    return Response('{"error": "not found"}', status="404 Not Found")


def application(environ, start_response):
    """Dispatch the request to the view registered for its path."""
    view = ROUTES.get(environ.get("PATH_INFO") or "/", not_found)
    response = view(environ)
    body = response.body.encode("utf-8")
    headers = [("Content-Type", response.content_type), ("Content-Length", str(len(body)))]
    start_response(response.status, headers + response.headers)
    return [body]
