"""Opening a study: its name, its SQLite storage, the identity it must keep across resumes, interrupted trials.

A study's database belongs to one dataset, model, prepared split and search space, stored as the study's user
attributes. Resuming checks them, so trials of another model or data never mix with this one's (they would mislead
the sampler and the report). A trial left RUNNING by a process that is gone (killed, out of memory) or marked
interrupted (Ctrl-C, SIGTERM) is set to FAIL and its parameters are queued again, once, so a resumed study redoes it.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

log = logging.getLogger(__name__)

RETRY_OF = "retry_of"  # user attribute of a queued trial: the number of the interrupted trial it redoes
INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class StudyIdentity:
    """What a study optimises: trials are only comparable when all of it matches."""

    dataset: str
    model: str
    split_hash: str
    space_hash: str

    def default_name(self) -> str:
        slug = re.sub(r"[^A-Za-z0-9]+", "_", self.dataset).strip("_").lower()
        return f"{slug}-{self.model}-{self.split_hash}"


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def open_study(
    name: str,
    storage: str,
    identity: StudyIdentity,
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
) -> optuna.Study:
    """Create the study, or load it to resume after checking that everything in ``storage`` has ``identity``."""
    mine = asdict(identity)
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        theirs = {k: summary.user_attrs.get(k) for k in mine}
        if theirs != mine:
            diff = ", ".join(f"{k}: {theirs[k]!r} there, {mine[k]!r} here" for k in mine if theirs[k] != mine[k])
            raise ValueError(
                f"storage {storage} holds study {summary.study_name!r} of another dataset, model, split or search "
                f"space ({diff}); refusing to mix them: pass another storage= (or leave it unset for the default "
                "under study_root) or study_name="
            )
    study = optuna.create_study(
        study_name=name, storage=storage, direction="maximize", sampler=sampler, pruner=pruner, load_if_exists=True
    )
    for key, value in mine.items():
        study.set_user_attr(key, value)
    return study


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def recover_interrupted(study: optuna.Study) -> list[int]:
    """Fail the trials an earlier process left unfinished on this host and queue their parameters again (once).

    Returns the numbers of the trials queued again."""
    host = socket.gethostname()
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get(RETRY_OF) for t in trials}
    queued = []
    for t in trials:
        stale = (
            t.state == TrialState.RUNNING
            and t.user_attrs.get("host") == host
            and isinstance(t.user_attrs.get("pid"), int)
            and t.user_attrs["pid"] != os.getpid()
            and not _alive(t.user_attrs["pid"])
        )
        if stale:
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            log.info(
                "trial %d was left running by process %s, which is gone: marked failed", t.number, t.user_attrs["pid"]
            )
        interrupted = stale or (t.state == TrialState.FAIL and t.user_attrs.get(INTERRUPTED))
        if interrupted and t.number not in retried and t.params:
            study.enqueue_trial(t.params, user_attrs={RETRY_OF: t.number}, skip_if_exists=False)
            queued.append(t.number)
    if queued:
        log.info("queued again the interrupted trial(s) %s", queued)
    return queued


def finished(study: optuna.Study) -> int:
    """Trials that count towards the trial limit: completed or pruned (failed and interrupted ones do not)."""
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
