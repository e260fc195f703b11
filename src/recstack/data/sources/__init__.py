"""Dataset sources: every raw layout loads into :class:`recstack.data.schema.Dataset` (see ``data/README.md``).

``load_dataset(name, data_home=None, *, download=True, **options)`` is the entry point; the loaders below read one
layout each.
"""

from recstack.data.sources.atomic import load_atomic
from recstack.data.sources.download import ARCHIVES, download_dataset
from recstack.data.sources.event_log import load_event_log
from recstack.data.sources.layout import Layout, detect_layout
from recstack.data.sources.movielens import load_movielens_1m, load_movielens_100k, load_movielens_csv
from recstack.data.sources.registry import load_dataset, load_folder, resolve_data_home
from recstack.data.sources.synthetic import generate_synthetic

__all__ = [
    "ARCHIVES",
    "Layout",
    "detect_layout",
    "download_dataset",
    "generate_synthetic",
    "load_atomic",
    "load_dataset",
    "load_event_log",
    "load_folder",
    "load_movielens_1m",
    "load_movielens_100k",
    "load_movielens_csv",
    "resolve_data_home",
]
