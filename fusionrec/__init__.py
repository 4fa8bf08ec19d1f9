"""fusionrec: streaming real-time recommendations. The CLI, settings and the wiring of each mode."""

__version__ = "0.1.0"
__all__ = ["__version__"]
