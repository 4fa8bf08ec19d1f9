"""Catalog item records: what the encoders read to understand an item."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["Item"]


@dataclass(frozen=True, slots=True)
class Item:
    """A catalog item. `text()` is what a text encoder sees: title, description, category, brand, tags."""

    item_id: str
    title: str
    description: str = ""
    category: str = ""
    brand: str = ""
    tags: tuple[str, ...] = ()
    price: float | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)

    def text(self) -> str:
        parts = [self.title, self.description, self.category, self.brand, " ".join(self.tags)]
        return ". ".join(p for p in parts if p)
