"""Dump a trained RecBole model's full score matrix, keyed by raw ids, for recstack's evaluator to re-judge.

    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 /tmp/recbole-venv/bin/python benchmarks/recbole_parity/dump_scores.py \
        --checkpoint /tmp/recbole-saved/BPR-<date>.pth --data-path /tmp/recbole-data --out /tmp/recbole-results/bpr.npz

Writes ``scores`` (users x items, float32, RecBole's ``full_sort_predict``), ``user_ids`` and ``item_ids`` (raw
tokens, RecBole's padding row/column dropped). Runs in the RecBole venv; see ``compare_evaluators.py``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--data-path", required=True, type=Path, help="the data_path the model was trained with")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()

    import torch
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, init_seed

    checkpoint = torch.load(args.checkpoint, map_location="cpu")
    config = checkpoint["config"]
    config["data_path"] = str(args.data_path / config["dataset"])
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, _, _ = data_preparation(config, dataset)
    model = get_model(config["model"])(config, train_data._dataset)
    model.load_state_dict(checkpoint["state_dict"])
    model.load_other_parameter(checkpoint.get("other_parameter"))
    shape = write_scores(model, dataset, config, args.out)
    print(f"{args.out}: {shape[0]} users x {shape[1]} items")


def write_scores(model, dataset, config, out: Path) -> tuple[int, int]:
    """``full_sort_predict`` for every user, padding row/column dropped, saved with the raw id tokens."""
    import torch
    from recbole.data.interaction import Interaction

    model.eval()
    uid, iid = config["USER_ID_FIELD"], config["ITEM_ID_FIELD"]
    n_users, n_items = dataset.user_num, dataset.item_num
    with torch.no_grad():
        users = torch.arange(1, n_users, device=config["device"])
        scores = model.full_sort_predict(Interaction({uid: users})).view(len(users), n_items)[:, 1:].cpu()
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        scores=scores.numpy().astype(np.float32),
        user_ids=np.asarray(dataset.field2id_token[uid][1:]).astype(str),
        item_ids=np.asarray(dataset.field2id_token[iid][1:]).astype(str),
    )
    return int(scores.shape[0]), int(scores.shape[1])


if __name__ == "__main__":
    main()
