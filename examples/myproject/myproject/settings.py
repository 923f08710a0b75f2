"""Application settings, read from the environment with defaults for development."""
import os

from myproject.version import VERSION

SITE_NAME = os.environ.get("MYPROJECT_SITE_NAME", "myproject")
CURRENCY = os.environ.get("MYPROJECT_CURRENCY", "EUR")
DEBUG = os.environ.get("MYPROJECT_DEBUG", "1") == "1"
USER_AGENT = f"{SITE_NAME}/{VERSION}"


def get(name: str) -> object:
    """Look a setting up by name (services use this so tests can see a settings edit)."""
    return globals()[name]
