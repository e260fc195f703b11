"""The winner's provenance (``<out>/winner/provenance.json``, and ``winner_provenance`` in ``auto.json``): what its
validation score came from and the ``recstack-train`` command that trains it again.

A tuned candidate's part of it is its best trial's own record, ``tuning.json`` in the trial's run folder
(:class:`~recstack.tuning.objective.TrialRecord`: study, trial number, seed, dataset, split hash, searched values),
read back rather than written a second time, with the study's storage, the trial's validation NDCG@10 and the command.
The command trains the study's experiment file (``<out>/experiment/``, written by ``recstack-tune``), with the settings
every candidate shared (data, split, trainer, processed_root, torch_threads ...: :data:`recstack.auto.candidates.SHARED_KEYS`),
the candidate's other ``per_model`` settings and, for a trained model, ``fit.max_epochs`` set to the epochs its trial
ran (a trial stopped by its share of the budget ran fewer than its config allows). An untuned candidate (popularity)
has no study: its command is ``model=<name>``. A two-stage winner has one part per model (retrieval, then re-ranker)
and the blend weight its best trials were scored with.

The data and split *choices* (``data=ml100k``) are known inside the ``recstack-auto`` app only; ``auto()`` called from
Python (a notebook, a test) cannot name them, so its commands leave them out and the record's ``note`` says to add them.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from recstack.auto.candidates import Candidate
from recstack.auto.search import CandidateResult
from recstack.tuning.objective import METRIC, TrialRecord, read_record
from recstack.tuning.study import sqlite_url

PROVENANCE_FILE = "provenance.json"
GROUPS = ("data", "split", "trainer")  # the config groups every candidate shares with recstack-train
PER_MODEL_IN_EXPERIMENT = ("model", "fit", "tune")  # per_model roots an experiment file already holds (or not needed)
NO_CHOICES = (
    "auto() ran outside the recstack-auto app, so the data / split / trainer choices are unknown: add them to each "
    "command (data=<name> split=<name>, as given to auto)"
)


@dataclass(frozen=True)
class PartProvenance:
    """One candidate's best trial (an untuned candidate: its one run) and how to train it again."""

    candidate: str
    trial: TrialRecord | None  # the trial's tuning.json; None: untuned, no study
    storage: str | None  # the study's Optuna storage (SQLite URL)
    run_dir: str  # the trial's run folder (config.yaml, metrics.json, checkpoints)
    valid_ndcg_at_10: float
    experiment: str | None  # the experiment file the command trains
    overrides: tuple[str, ...]  # recstack-train's overrides; compose("train", overrides) from Python
    command: str


@dataclass(frozen=True)
class Provenance:
    """The winner: one part for a single model, retrieval then re-ranker for a two-stage pipeline."""

    dataset: str
    split_hash: str
    seed: int
    winner: str
    valid_ndcg_at_10: float  # the winner's in the search (a two-stage winner: its served pipeline's)
    parts: tuple[PartProvenance, ...]
    blend_weight: float | None  # a two-stage winner: the blend weight its best trials were scored with
    note: str = ""


def _value(value: Any) -> str:
    """``value`` in Hydra's override grammar."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "[" + ",".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str) and not re.fullmatch(r"[\w./:@+-]+", value):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return str(value)


def _flatten(node: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def shared_overrides(cfg: DictConfig) -> tuple[tuple[str, ...], bool]:
    """The recstack-auto settings every candidate took over (:data:`~recstack.auto.candidates.SHARED_KEYS`), as
    recstack-train overrides, and whether the group choices are known (inside the recstack-auto app only)."""
    from hydra.core.hydra_config import HydraConfig

    found: list[str] = []
    known = HydraConfig.initialized()
    if known:
        hydra = HydraConfig.get()
        found += [f"{g}={hydra.runtime.choices[g]}" for g in GROUPS if hydra.runtime.choices.get(g)]
        # Settings inside those groups given on the command line (data.source.path=my_events.csv): as given.
        for override in hydra.overrides.task:
            key = override.split("=", 1)[0].lstrip("+~")
            if "." in key and key.split(".", 1)[0] in GROUPS:
                found.append(override)
    found.append(f"processed_root={_value(str(Path(cfg.processed_root).resolve()))}")
    found.append(f"text_cache_dir={_value(str(Path(cfg.text_cache_dir).resolve()))}")
    if cfg.get("torch_threads") is not None:
        found.append(f"torch_threads={int(cfg.torch_threads)}")
    return tuple(found), known


def part_provenance(
    candidate: Candidate,
    result: CandidateResult,
    out_dir: Path,
    shared: Sequence[str],
    per_model: Mapping[str, Any],
) -> PartProvenance:
    """How ``result`` (a candidate's best trial, or an untuned candidate's run) is trained again (module docstring)."""
    assert result.run_dir is not None and result.valid_score is not None
    out_dir = out_dir.resolve()
    record = read_record(result.run_dir) if candidate.tuned else None
    extra = _flatten(per_model)
    experiment = None
    if record is not None:  # its study's experiment file holds the trial's whole model and fit settings
        assert result.experiment is not None, f"tuned candidate {candidate.name} without its experiment file"
        experiment = Path(result.experiment)
        head = [f"hydra.searchpath=[file://{out_dir}]", f"experiment={experiment.stem}"]
        extra = {k: v for k, v in extra.items() if k.split(".", 1)[0] not in PER_MODEL_IN_EXPERIMENT}
    else:  # untuned (popularity): its own model config
        extra = {k: v for k, v in extra.items() if not k.startswith("tune.")}
        head = [f"model={candidate.name}"]
    if candidate.trainable and result.epochs:  # last: it replaces a per_model fit.max_epochs
        extra.pop("fit.max_epochs", None)
        extra["fit.max_epochs"] = int(result.epochs)
    overrides = [*head, *shared, *(f"{k}={_value(v)}" for k, v in extra.items())]
    return PartProvenance(
        candidate=candidate.name,
        trial=record,
        storage=sqlite_url(Path(result.study_dir) / "study.db") if result.study_dir else None,
        run_dir=str(result.run_dir),
        valid_ndcg_at_10=float(result.valid[METRIC]) if result.valid else float(result.valid_score),
        experiment=str(experiment) if experiment is not None else None,
        overrides=tuple(overrides),
        command=shlex.join(["recstack-train", *overrides]),
    )


def winner_provenance(
    cfg: DictConfig,
    winner: CandidateResult,
    parts: Sequence[tuple[Candidate, CandidateResult]],
    out_dir: Path,
    *,
    dataset: str,
    split_hash: str,
) -> Provenance:
    """The winner's record; ``parts``: the winner itself, or a two-stage winner's retrieval and re-ranker."""
    shared, known = shared_overrides(cfg)
    node = cfg.get("per_model")  # an empty DictConfig is falsy, and to_container refuses a plain dict
    per_model = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else {}
    assert isinstance(per_model, dict)
    assert winner.valid_score is not None
    return Provenance(
        dataset=dataset,
        split_hash=split_hash,
        seed=int(cfg.seed),
        winner=winner.name,
        valid_ndcg_at_10=float(winner.valid_score),
        parts=tuple(part_provenance(c, r, out_dir, shared, per_model.get(c.name) or {}) for c, r in parts),
        blend_weight=winner.blend_weight,
        note="" if known else NO_CHOICES,
    )


def write_provenance(provenance: Provenance, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(provenance), indent=2) + "\n")
    return path


def read_provenance(path: str | Path) -> Provenance:
    data = json.loads(Path(path).read_text())
    parts = tuple(
        PartProvenance(
            **{
                **p,
                "trial": TrialRecord(**p["trial"]) if p["trial"] else None,
                "overrides": tuple(p["overrides"]),
            }
        )
        for p in data.pop("parts")
    )
    return Provenance(**data, parts=parts)
