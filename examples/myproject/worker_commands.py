"""Worker commands for myproject: a mixin placed before prefork's Worker in the MRO.

Trigger a command on every worker of a running server with
`prefork ctl --pid FILE command reset_lookups`; each worker answers with its own reply.
This module is deliberately not part of the project (it is loaded once, with the server):
its methods look the project's modules up at call time, so they always run the reloaded code.
"""
import importlib
import logging
import os

log = logging.getLogger("myproject.commands")


class CatalogCommands:
    """Adds the `reset_lookups` command to every worker."""

    def on_reset_lookups(self, *args: str) -> None:
        """In the worker, before child_reset_lookups: note the request."""
        log.info("worker %s: resetting the catalogue lookup counter", os.getpid())

    def child_reset_lookups(self, *args: str) -> dict:
        """In the worker: reset the catalogue's lookup counter; reply with its old value."""
        catalog = importlib.import_module("myproject.services.catalog")
        return {"pid": os.getpid(), "lookups": catalog.reset_lookups()}
