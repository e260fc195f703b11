"""Write a prepared recstack split as RecBole atomic benchmark files, so RecBole trains and tests on exactly our split.

    RECSTACK_DATA_HOME=../shared/data .venv/bin/python benchmarks/recbole_parity/export_split.py \
        --data ml100k --split random --out /tmp/recbole-data --name ml-100k-recstack

writes ``<out>/<name>/<name>.{train,valid,test}.inter`` (tab-separated, RecBole header types) from the split that
``recstack-data prepare data=<data> split=<split>`` builds (or reuses), or from ``--split-dir`` if given. Raw user and
item ids are written, so RecBole's own id remapping cannot change which pairs land in which file. RecBole reads them
with ``benchmark_filename: [train, valid, test]`` (see ``recbole_common.yaml`` and the README).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from recstack.data.prepared import PreparedSplit

HEADER = ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]


def write_atomic(split: PreparedSplit, out_dir: Path, name: str) -> dict[str, int]:
    """``<out_dir>/<name>/<name>.<stage>.inter`` for train, valid and test; returns the row count of each."""
    folder = out_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for stage in ("train", "valid", "test"):
        frame = split.frame(stage)
        table = pd.DataFrame(
            {
                HEADER[0]: frame["user_id"].astype(str),
                HEADER[1]: frame["item_id"].astype(str),
                HEADER[2]: frame["value"].astype(float),
                HEADER[3]: frame["timestamp"].astype("int64"),
            }
        )
        table.to_csv(folder / f"{name}.{stage}.inter", sep="\t", index=False)
        counts[stage] = len(table)
    (folder / "recstack_split.json").write_text(
        json.dumps({"split_root": str(split.root), "config_hash": split.config_hash, "counts": counts}, indent=2)
    )
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="ml100k", help="config name under configs/data (default ml100k)")
    parser.add_argument("--split", default="random", help="config name under configs/split (default random)")
    parser.add_argument("--split-dir", type=Path, help="an already prepared split folder (overrides --data/--split)")
    parser.add_argument("--processed-root", default="data/processed", help="where prepared splits live")
    parser.add_argument("--out", type=Path, default=Path("/tmp/recbole-data"), help="RecBole data_path")
    parser.add_argument("--name", default="ml-100k-recstack", help="RecBole dataset name")
    args = parser.parse_args()
    if args.split_dir:
        split = PreparedSplit.load(args.split_dir)
    else:
        from recstack.config import prepare_named

        split = prepare_named(args.data, args.split, out_root=args.processed_root)
    counts = write_atomic(split, args.out, args.name)
    print(f"{split!r} -> {args.out / args.name}: {counts}")


if __name__ == "__main__":
    main()
