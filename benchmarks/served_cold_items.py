"""Cold items through the served pipeline (issue 14, point 3): ``split=new_items``, the bundle's pipeline with and
without its content section, on all items and on the cold items alone, beside every single model.

    RECSTACK_DATA_HOME=../shared/data nice .venv/bin/python benchmarks/served_cold_items.py \\
        --retrieval lightgcn=<run> --ranker <EASE run>          # runs trained with split=new_items

Each retrieval run is exported with the ranker run and a content section (MiniLM ONNX vectors of every catalogue
item, ``content.redis_url=""``: no live upserts), as ``recstack-export run=<retrieval> ranker_run=<ranker>`` does
(the blend weight tuned on the validation split through the served pipeline, and with it the content trust: how far
a cold candidate's text match moves its ranker score, ``manifest.ranker.blend.content_trust``). Its pipeline
(:class:`recstack.serving.pipeline.Pipeline`, the code the service runs) is scored by
:func:`recstack.offline.report.evaluate_bundle` twice: ``content off`` (the pipeline as offline evaluation and
bundles without a content section run it: cold items keep their untrained vectors) and ``content attached`` (as the
service runs a bundle with a content section: items without a training interaction leave the collaborative search
and the ranker and reach users through the content stage). ``cold/*`` counts only the cold items (no training
interaction) as relevant; the ranking is over the whole catalogue either way. Each single model (the runs, and the
TF-IDF content recommender fitted here) is scored by the full-ranking evaluator on the same split. ``cold share``: the
share of the test users' top-10 slots that hold a cold item (the catalogue's share of cold items is given beside it).
Test is read once per row. Prints a markdown table and writes benchmarks/results/served_cold_items-<UTC stamp>.json.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from invocation import metric_cells, results_path, start_run, write_results

from recstack.bundle.reader import Bundle
from recstack.config import compose
from recstack.data.prepared import PreparedSplit
from recstack.evaluation.evaluator import evaluate, evaluate_topk
from recstack.models.base import Recommender
from recstack.models.content import ContentRecommender
from recstack.offline.report import evaluate_bundle

METRICS = ("ndcg@10", "recall@10")
STAGES = ("valid", "test", "cold/valid", "cold/test")


def export(retrieval: Path, ranker: Path, out: Path) -> tuple[Path, float]:
    from recstack.cli.export import export_from_config

    overrides = [f"run={retrieval}", f"ranker_run={ranker}", f"out={out}", "text=false", "content.redis_url=''"]
    started = time.perf_counter()
    bundle = export_from_config(compose("export", overrides))
    return bundle, time.perf_counter() - started


def cold_items(split: PreparedSplit) -> np.ndarray:
    """Items without a training interaction that someone interacts with in valid or test."""
    judged = np.union1d(split.valid["item_idx"].to_numpy(), split.test["item_idx"].to_numpy())
    return np.intersect1d(np.flatnonzero(split.item_popularity == 0), judged).astype(np.int64)


def model_scores(model: Recommender, split: PreparedSplit, cold: np.ndarray) -> dict[str, dict[str, float]]:
    out = {}
    for stage in ("valid", "test"):
        for prefix, relevant in (("", None), ("cold/", cold)):
            metrics = evaluate(model, split, stage, (10,), relevant_items=relevant).metrics  # type: ignore[arg-type]
            out[f"{prefix}{stage}"] = {m: float(metrics[m]) for m in METRICS}
    return out


def pipeline_scores(
    bundle: Path, split: PreparedSplit, cold: np.ndarray, content: bool
) -> tuple[dict[str, dict[str, dict[str, float]]], float]:
    """``{"retrieval" | "rerank": {stage: metrics}}`` of the bundle's pipeline, with or without its content, each
    list judged on all items and on the cold ones; and the share of the test users' re-ranked top-10 slots that hold
    a cold item."""
    out: dict[str, dict[str, dict[str, float]]] = {"retrieval": {}, "rerank": {}}
    share = float("nan")
    for stage in ("valid", "test"):
        evaluations = evaluate_bundle(bundle, split, stage, (10,), content=content)  # type: ignore[arg-type]
        for mode, evaluation in zip(("retrieval", "rerank"), evaluations, strict=False):
            lists = evaluation.result.per_user
            assert lists is not None
            cold_only = evaluate_topk(lists.topk, lists.users, split, stage, (10,), relevant_items=cold)  # type: ignore[arg-type]
            for prefix, result in (("", evaluation.result), ("cold/", cold_only)):
                out[mode][f"{prefix}{stage}"] = {m: float(result.metrics[m]) for m in METRICS}
            if stage == "test" and mode == "rerank":
                share = float(np.isin(lists.topk[lists.topk >= 0], cold).mean())
    return out, share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--retrieval", nargs="+", required=True, metavar="NAME=RUN", help="retrieval runs")
    parser.add_argument("--ranker", required=True, type=Path, help="the ranker run (EASE)")
    parser.add_argument("--bundles-root", type=Path, default=Path("outputs/served_cold_items"))
    args = parser.parse_args()
    bench = start_run()
    from recstack.training.runs import load_run

    retrieval = {name: Path(run) for name, run in (item.split("=", 1) for item in args.retrieval)}
    singles: dict[str, dict[str, dict[str, float]]] = {}
    split: PreparedSplit | None = None
    for label, run in [*retrieval.items(), ("ranker", args.ranker)]:
        loaded = load_run(run)
        if split is not None and loaded.split.config_hash != split.config_hash:
            raise SystemExit(f"{run} trained on split {loaded.split.config_hash}, not {split.config_hash}")
        split = loaded.split
        kind = str(loaded.config.model._target_).split(".")[-1]
        singles[f"{kind} alone ({label}: {run.name})"] = model_scores(loaded.model, split, cold_items(split))
    assert split is not None
    cold = cold_items(split)
    if not len(cold):
        raise SystemExit(f"{split!r} has no cold items: train the runs with split=new_items")
    content_model = ContentRecommender(split.n_users, split.n_items).fit(split)
    singles["content alone (TF-IDF, its defaults)"] = model_scores(content_model, split, cold)
    print(f"{split!r}; {len(cold)} cold items of {split.n_items}\n", flush=True)

    served: dict[str, dict[str, dict[str, float]]] = {}
    info = {}
    for name, run in retrieval.items():
        bundle, seconds = export(run, args.ranker, args.bundles_root / f"{name}-{args.ranker.name}")
        manifest = Bundle.load(bundle).manifest
        tuned = manifest.ranker.blend if manifest.ranker else None
        blend = tuned.weight if tuned else None
        info[name] = {"bundle": str(bundle), "export_s": round(seconds, 1), "blend": blend}
        if tuned is not None and tuned.content_trust is not None:  # tuned with the weight, on validation
            info[name]["content_trust"] = tuned.content_trust
            info[name]["content_trust_grid"] = dict(tuned.content_grid)
        for content in (False, True):
            scores, share = pipeline_scores(bundle, split, cold, content)
            tag = "content attached" if content else "content off"
            served[f"served: {name} retrieval alone, {tag}"] = scores["retrieval"]
            served[f"served: {name} -> {manifest.ranker.kind if manifest.ranker else '-'}, {tag}"] = scores["rerank"]
            info[name][f"cold_share_{tag.replace(' ', '_')}"] = share
        print(f"{name}: exported in {seconds:.1f} s, blend {blend}; {info[name]}", flush=True)

    header = " | ".join(f"{s} {m}" for s in STAGES for m in METRICS)
    print(f"\n| pipeline / model | {header} |\n|---|" + "---:|" * (len(STAGES) * len(METRICS)))
    for label, result in {**singles, **served}.items():
        print(f"| {label} | {metric_cells(result, STAGES, METRICS)} |")
    print(f"\ncold items: {len(cold) / split.n_items:.1%} of the catalogue; 1-min load {os.getloadavg()[0]:.2f}")
    fields = {
        "protocol": "runs trained on train (split=new_items); blend tuned on valid at export; test read once per row",
        "cold_items": len(cold),
        "n_items": split.n_items,
        "single_models": singles,
        "served": served,
        "bundles": info,
    }
    write_results(results_path("served_cold_items", bench.started), bench, split, fields)


if __name__ == "__main__":
    main()
