"""A deterministic synthetic shop for a fresh clone: categories, brands, titled items, users with
tastes, and sessions that run view -> click -> add_to_cart -> purchase, with searches between.

Users prefer two categories and a few brands, so co-occurrence and text models have real
structure to find. Same seed, same shop, byte for byte.
"""

from __future__ import annotations

import random

from schemas.events import Event, EventType
from schemas.items import Item
from shopdata.loader import BASE_TS_MS, Dataset, LoadReport

__all__ = ["generate_shop"]

CATEGORIES: dict[str, tuple[list[str], list[str]]] = {
    "Running Shoes": (["trail", "road", "cushioned", "lightweight", "racing"], ["running shoe", "trainer"]),
    "Coffee": (
        ["dark roast", "single origin", "espresso", "decaf", "organic"],
        ["coffee beans", "ground coffee"],
    ),
    "Headphones": (
        ["wireless", "noise cancelling", "over-ear", "in-ear", "studio"],
        ["headphones", "earbuds"],
    ),
    "Yoga": (["non-slip", "eco", "thick", "travel", "cork"], ["yoga mat", "yoga block"]),
    "Kitchen Knives": (["chef", "santoku", "paring", "damascus", "bread"], ["knife", "knife set"]),
    "Board Games": (
        ["strategy", "family", "party", "cooperative", "two-player"],
        ["board game", "card game"],
    ),
    "Camping": (["ultralight", "waterproof", "4-season", "compact", "insulated"], ["tent", "sleeping bag"]),
    "Skincare": (["hydrating", "vitamin c", "fragrance-free", "spf 50", "night"], ["serum", "moisturizer"]),
}
BRANDS = [
    "Acme",
    "Northwind",
    "Contoso",
    "Fabrikam",
    "Globex",
    "Initech",
    "Umbra",
    "Vertex",
    "Zephyr",
    "Lumen",
    "Koda",
    "Orbit",
]
FUNNEL = [EventType.VIEW, EventType.CLICK, EventType.ADD_TO_CART, EventType.PURCHASE]


def generate_shop(
    n_users: int = 1000, n_items: int = 400, sessions_per_user: int = 3, seed: int = 7, spacing_ms: int = 250
) -> Dataset:
    rng = random.Random(seed)
    cats = list(CATEGORIES)
    items: list[Item] = []
    by_cat: dict[str, list[Item]] = {c: [] for c in cats}
    for j in range(n_items):
        cat = cats[j % len(cats)]
        adjectives, nouns = CATEGORIES[cat]
        brand = BRANDS[rng.randrange(len(BRANDS))]
        adj = rng.sample(adjectives, 2)
        noun = rng.choice(nouns)
        item = Item(
            item_id=f"I{j:05d}",
            title=f"{brand} {adj[0]} {adj[1]} {noun}",
            description=f"A {adj[0]} {noun} for everyday use, {adj[1]}.",
            category=cat,
            brand=brand,
            tags=(adj[0], adj[1]),
            price=round(rng.uniform(5, 300), 2),
        )
        items.append(item)
        by_cat[cat].append(item)
    # each user's sessions, generated per user then interleaved in time
    pending: list[tuple[float, int, Event]] = []
    for u in range(n_users):
        user_id = f"U{u:05d}"
        favourites = rng.sample(cats, 2)
        liked_brands = set(rng.sample(BRANDS, 3))
        t = rng.uniform(0, 3600)
        seq = 0
        for _ in range(sessions_per_user):
            cat = favourites[0] if rng.random() < 0.65 else (favourites[1] if rng.random() < 0.8 else rng.choice(cats))
            pool = by_cat[cat]
            if rng.random() < 0.5:
                adj_word: str = rng.choice(CATEGORIES[cat][0])
                pending.append(
                    (
                        t,
                        seq,
                        Event(
                            f"{user_id}:{seq}",
                            EventType.SEARCH,
                            user_id,
                            0,
                            query=f"{adj_word} {rng.choice(CATEGORIES[cat][1])}",
                        ),
                    )
                )
                seq += 1
                t += rng.uniform(2, 20)
            for _ in range(rng.randint(1, 4)):
                weights = [3.0 if it.brand in liked_brands else 1.0 for it in pool]
                item = rng.choices(pool, weights=weights)[0]
                depth = 1 + sum(rng.random() < p for p in (0.6, 0.35, 0.5))
                for etype in FUNNEL[:depth]:
                    pending.append((t, seq, Event(f"{user_id}:{seq}", etype, user_id, 0, item_id=item.item_id)))
                    seq += 1
                    t += rng.uniform(1, 30)
            t += rng.uniform(3600, 86400)
    pending.sort(key=lambda p: (p[0], p[2].user_id, p[1]))
    events = [
        Event(ev.event_id, ev.type, ev.user_id, BASE_TS_MS + i * spacing_ms, ev.item_id, ev.query)
        for i, (_, _, ev) in enumerate(pending)
    ]
    report = LoadReport(rows_read=len(events), events=len(events), item_rows_read=len(items), items=len(items))
    return Dataset(name=f"synthetic-shop-{seed}", items=items, events=events, report=report)
