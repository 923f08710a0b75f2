"""An item of the catalogue."""
from dataclasses import dataclass


@dataclass(frozen=True)
class Item:
    """One thing we sell; prices are in cents to stay exact."""

    sku: str
    name: str
    price_cents: int

    def price(self, currency: str) -> str:
        """Format the price for display."""
        return f"{self.price_cents / 100:.2f} {currency}"
