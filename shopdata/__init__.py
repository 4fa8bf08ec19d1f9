"""Shop data: the on-disk dataset layout (items.csv + events.csv) and the synthetic demo shop.

Below `ranker` and `streams` in the layers: training, evaluation, replay and the demo read
datasets through this package; the worker and the API never need it (they load a bundle).
A bad file ends in a ConfigError/DataError naming it; a few bad rows are skipped and counted
by reason in `Dataset.report` (a LoadReport).
"""

from shopdata.loader import (
    BASE_TS_MS,
    Dataset,
    LoadReport,
    load_dataset,
    load_items,
    load_items_file,
    split_item_text,
)
from shopdata.source import SYNTHETIC, event_records, load_data
from shopdata.synthetic import generate_shop

__all__ = [
    "BASE_TS_MS",
    "SYNTHETIC",
    "Dataset",
    "LoadReport",
    "event_records",
    "generate_shop",
    "load_data",
    "load_dataset",
    "load_items",
    "load_items_file",
    "split_item_text",
]
