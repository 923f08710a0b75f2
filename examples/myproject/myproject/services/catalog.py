"""The catalogue service: which items exist and how they are labelled."""
import importlib

from myproject.models.item import Item

LABEL = "catalogue"

_ITEMS = (
    Item("tea-01", "Green tea", 450),
    Item("cof-02", "Espresso beans", 1290),
    Item("cup-03", "Stoneware cup", 900),
)

_lookups = 0


def _setting(name: str) -> object:
    # Looked up at call time through the module registry (no import edge): project.py
    # declares `needs=["../settings"]` so a settings edit reloads this module too.
    return importlib.import_module("myproject.settings").get(name)


def items() -> list[Item]:
    """Every item, cheapest first."""
    global _lookups
    _lookups += 1
    return sorted(_ITEMS, key=lambda item: item.price_cents)


def currency() -> str:
    """The currency prices are shown in."""
    return str(_setting("CURRENCY"))


def lookups() -> int:
    """How many times this process listed the catalogue (reset by the worker command)."""
    return _lookups


def reset_lookups() -> int:
    """Reset the lookup counter; return the value it had."""
    global _lookups
    previous, _lookups = _lookups, 0
    return previous
