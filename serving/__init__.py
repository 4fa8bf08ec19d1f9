"""HTTP read API for downstream services: stored recommendations, similar items, search."""

__all__: list[str] = []
