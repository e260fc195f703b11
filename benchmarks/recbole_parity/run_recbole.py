"""Train and test one RecBole model on an exported split; print and save its figures. Runs in the RecBole venv.

    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 /tmp/recbole-venv/bin/python benchmarks/recbole_parity/run_recbole.py \
        --model BPR --config benchmarks/recbole_parity/bpr.yaml --data-path /tmp/recbole-data \
        --dataset ml-100k-recstack --out /tmp/recbole-results/bpr.json

Uses RecBole's own pieces (Config, create_dataset, data_preparation, its Trainer) so nothing of recstack is involved.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="RecBole model name, e.g. BPR or LightGCN")
    parser.add_argument("--config", required=True, type=Path, help="model yaml (recbole_common.yaml is added first)")
    parser.add_argument("--data-path", required=True, type=Path)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--out", required=True, type=Path, help="JSON file for the figures")
    parser.add_argument(
        "--scores-out", type=Path, help="also save the best model's score matrix (compare_evaluators.py)"
    )
    args = parser.parse_args()

    import recbole
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_logger, init_seed

    common = Path(__file__).with_name("recbole_common.yaml")
    config = Config(
        model=args.model,
        dataset=args.dataset,
        config_file_list=[str(common), str(args.config)],
        config_dict={"data_path": str(args.data_path)},
    )
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)

    started = time.perf_counter()
    best_valid_score, best_valid = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    train_seconds = time.perf_counter() - started
    test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    figures = {
        "model": args.model,
        "recbole_version": recbole.__version__,
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "dataset": args.dataset,
        "n_users": int(dataset.user_num) - 1,  # RecBole reserves id 0 for padding
        "n_items": int(dataset.item_num) - 1,
        "inter_counts": {
            "train": len(train_data.dataset),
            "valid": len(valid_data.dataset),
            "test": len(test_data.dataset),
        },
        "epochs_trained": len(trainer.train_loss_dict),
        "train_seconds": round(train_seconds, 1),
        "best_valid_ndcg@10": float(best_valid_score),
        "valid": {k: float(v) for k, v in best_valid.items()},
        "test": {k: float(v) for k, v in test.items()},
    }
    if args.scores_out:
        from dump_scores import write_scores  # this folder is on sys.path when run as a script

        write_scores(trainer.model, dataset, config, args.scores_out)  # the best model: evaluate() reloaded it
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
