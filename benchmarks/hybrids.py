"""The hybrid table: every hybrid of configs/model/hybrid_*.yaml beside each of its parts, valid and test.

    RECSTACK_DATA_HOME=../shared/data nice .venv/bin/python benchmarks/hybrids.py \
        --runs mf=outputs/runs/mf-... lightgcn=outputs/runs/lightgcn-... [--split random] [--hybrids weighted stacking]

Parts are trained on the training split once and shared by every hybrid: fit(split) models are fitted here, MF and
LightGCN are loaded from the run folders given with ``--runs`` (each must have trained on this split), or trained
in-process with their default configs when none is given (minutes). Each hybrid is tuned on the validation split only
(weights, threshold, blend weight, or the stacker's meta-model and its cross-validated settings); then every row is
scored once on test by the one evaluator. The "best" hybrid is picked without test, by its selection score: valid
NDCG@10, except for the stacker, whose valid row is in-sample (its meta-model was fitted on those labels) and which is
judged by its cross-validated NDCG@10 over held-out validation users. Its test NDCG@10 is compared with the best single
model's in the table (EASE included). ``--split new_items`` gives the cold-item table: every row also scored on the
items without a training interaction alone (``cold/*``), e.g. with ``--set weighted.parts=[ease,content]``.
Prints a markdown table and writes benchmarks/results/hybrids-<split>-<UTC stamp>.json.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from invocation import metric_cells, results_path, start_run, write_results
from omegaconf import OmegaConf

from recstack.config import config_dir, prepare_named
from recstack.data.prepared import PreparedSplit
from recstack.evaluation.evaluator import evaluate, untrained_items
from recstack.hybrids.base import Hybrid
from recstack.hybrids.parts import build_parts
from recstack.models.base import Recommender
from recstack.training.build import build_model

HYBRIDS = ("weighted", "switching", "cascade", "stacking")
METRICS = ("ndcg@10", "recall@10", "map@10")
TARGET_NDCG = 0.340
TARGET_GAIN = 0.03


def hybrid_config_parts(name: str, overrides: list[str]) -> list[str]:
    cfg = OmegaConf.load(config_dir() / "model" / f"hybrid_{name}.yaml")
    cfg.merge_with_dotlist(overrides)
    if "parts" in cfg:
        return list(cfg.parts)
    return [cfg[k] for k in ("cold", "warm", "retrieval", "ranker") if k in cfg]


def build_hybrid(name: str, split: PreparedSplit, overrides: list[str]) -> Hybrid:
    cfg = OmegaConf.load(config_dir() / "model" / f"hybrid_{name}.yaml")
    cfg.merge_with_dotlist(overrides)
    model = build_model(cfg, split, progress=False)  # type: ignore[arg-type]
    assert isinstance(model, Hybrid)
    return model


def scores(model: Recommender, split: PreparedSplit, cold: np.ndarray) -> dict[str, dict[str, float]]:
    """valid and test metrics over all items; with cold items (no training interaction), also over them alone
    (``cold/valid``, ``cold/test``: only those items count as relevant, ranking still over the whole catalogue)."""
    out = {}
    for stage in ("valid", "test"):
        metrics = evaluate(model, split, stage, (10,)).metrics  # type: ignore[arg-type]
        out[stage] = {m: metrics[m] for m in METRICS}
        if cold.size:
            metrics = evaluate(model, split, stage, (10,), relevant_items=cold).metrics  # type: ignore[arg-type]
            out[f"cold/{stage}"] = {m: metrics[m] for m in METRICS}
    return out


def stages(result: dict[str, dict[str, float]]) -> tuple[str, ...]:
    return tuple(s for s in ("valid", "test", "cold/valid", "cold/test") if s in result)


def row(label: str, result: dict[str, dict[str, float]], seconds: float, select: float) -> str:
    return f"| {label} | {metric_cells(result, stages(result), METRICS)} | {select:.4f} | {seconds:.1f} |"


def selection_score(tuning: dict[str, object], valid_ndcg: float) -> float:
    """What picks the best hybrid without test: the stacker's cross-validated NDCG@10 (its valid row is in-sample:
    the meta-model was fitted on those very labels); for the others, valid NDCG@10 (they tune one to three numbers)."""
    chosen = tuning.get("chosen")
    return float(chosen["cv/ndcg@10"]) if isinstance(chosen, dict) else valid_ndcg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="ml100k")
    parser.add_argument("--split", default="random", help="configs/split/<name>.yaml (new_items: the cold-item table)")
    parser.add_argument("--runs", nargs="*", default=[], help="name=run_dir for trainable parts (mf, lightgcn)")
    parser.add_argument("--hybrids", nargs="+", default=list(HYBRIDS), choices=HYBRIDS)
    parser.add_argument("--train-overrides", nargs="*", default=["torch_threads=1"], help="for parts trained here")
    parser.add_argument("--processed-root", default="data/processed")
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="HYBRID.KEY=VALUE",
        help="override a hybrid's config, e.g. weighted.parts=[ease,content] cascade.ranker=content",
    )
    args = parser.parse_args()
    overrides: dict[str, list[str]] = {h: [] for h in HYBRIDS}
    for item in args.set:
        hybrid, _, dotted = item.partition(".")
        if hybrid not in overrides or "=" not in dotted:
            parser.error(f"--set {item!r}: write HYBRID.KEY=VALUE with HYBRID one of {list(HYBRIDS)}")
        overrides[hybrid].append(dotted)
    bench = start_run()
    split = prepare_named(args.data, args.split, out_root=args.processed_root)
    print(f"{split!r}\n")
    runs = dict(item.split("=", 1) for item in args.runs)
    cold = untrained_items(split)
    if cold.size:
        print(f"{cold.size} items without a training interaction: cold/* columns are metrics on them alone\n")

    names = ["ease"]
    for hybrid in args.hybrids:
        names += [n for n in hybrid_config_parts(hybrid, overrides[hybrid]) if n not in names]
    part_results, part_seconds = {}, {}
    parts: dict[str, Recommender] = {}
    for name in names:
        t = time.perf_counter()
        parts.update(
            build_parts(
                [name], split, runs={name: runs[name]} if name in runs else None, train_overrides=args.train_overrides
            )
        )
        part_seconds[name] = time.perf_counter() - t
        part_results[name] = scores(parts[name], split, cold)

    hybrid_results, hybrid_seconds, tuning = {}, {}, {}
    for hybrid in args.hybrids:
        t = time.perf_counter()
        model = build_hybrid(hybrid, split, overrides[hybrid]).fit(split, parts=parts)
        hybrid_seconds[hybrid] = time.perf_counter() - t
        tuning[hybrid] = {"parts": list(model.part_names), **model.tuning}
        hybrid_results[hybrid] = scores(model, split, cold)
        print(f"{hybrid}: fitted in {hybrid_seconds[hybrid]:.1f} s; {json.dumps(tuning[hybrid], default=str)}\n")

    header = " | ".join(f"{s} {m}" for s in stages(part_results["ease"]) for m in METRICS)
    select = {n: part_results[n]["valid"]["ndcg@10"] for n in names}
    select.update({h: selection_score(tuning[h], hybrid_results[h]["valid"]["ndcg@10"]) for h in args.hybrids})
    columns = len(stages(part_results["ease"])) * len(METRICS)
    print(f"| model | {header} | selection ndcg@10 | fit s |\n|" + "---|" * (3 + columns))
    for name in names:
        source = f"run {runs[name]}" if name in runs else "fitted here"
        print(row(f"{name} ({source})", part_results[name], part_seconds[name], select[name]))
    for hybrid in args.hybrids:
        print(
            row(
                f"hybrid_{hybrid} ({' + '.join(tuning[hybrid]['parts'])})",
                hybrid_results[hybrid],
                hybrid_seconds[hybrid],
                select[hybrid],
            )
        )

    best_single = max(names, key=lambda n: select[n])
    best_single_test = max(part_results, key=lambda n: part_results[n]["test"]["ndcg@10"])
    best_hybrid = max(args.hybrids, key=lambda n: select[n])
    hybrid_test = hybrid_results[best_hybrid]["test"]["ndcg@10"]
    single_test = part_results[best_single_test]["test"]["ndcg@10"]
    gain = hybrid_test / single_test - 1
    met = hybrid_test >= TARGET_NDCG and gain >= TARGET_GAIN
    print(
        f"\nbest hybrid on valid: {best_hybrid}, test ndcg@10 {hybrid_test:.4f}; best single model on test: "
        f"{best_single_test} {single_test:.4f} (on valid: {best_single}); gain {gain:+.1%}. "
        f"Target (test ndcg@10 >= {TARGET_NDCG} and >= +{TARGET_GAIN:.0%}): {'met' if met else 'not met'}"
    )
    fields = {
        "cold_items": int(cold.size),
        "overrides": {h: o for h, o in overrides.items() if o},
        "protocol": "parts trained on train; hybrids tuned on valid only; test read once per row by the evaluator",
        "parts": {n: {**part_results[n], "fit_s": part_seconds[n], "run": runs.get(n)} for n in names},
        "hybrids": {h: {**hybrid_results[h], "fit_s": hybrid_seconds[h], "tuning": tuning[h]} for h in args.hybrids},
        "selection_ndcg@10": select,
        "best_hybrid_on_valid": best_hybrid,
        "best_single_on_test": best_single_test,
        "gain_over_best_single": gain,
        "target_met": met,
    }
    write_results(results_path(f"hybrids-{args.split}", bench.started), bench, split, fields)


if __name__ == "__main__":
    main()
