"""``trainer=ddp_cpu``: two real training processes (Lightning's DDP launcher, gloo on the CPU) on a small synthetic set.

Three launches, since process start-up (two interpreters importing torch and Lightning, one after the other) is most
of each one's time: a run of LightGCN (its whole graph replicated on both ranks, the batches sharded) whose rank 0 is
killed hard in its third epoch; that run resumed from its last checkpoint, as the dead rank's message says, to the
end; and one short run of MF to the end. Each rank records what it did with the test callback of rank_record.py (kept
up to date after every step, so a rank killed or left alone mid-run has recorded all it finished), and every file it
writes under the runs folder through audited_train.py (the real entry point, observed by an audit hook). The tests
read what the processes leave behind (exit status, output, files), never sleep: the timeout only bounds a broken run
(start-up of both processes took 10-40 s on the 2-core CI machine, depending on its load).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from recstack.data.prepared import PreparedSplit
from recstack.training.faults import LOST_RANK_MESSAGE

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
RUN_TIMEOUT = 300.0
BATCH = 256  # per rank: several optimiser steps per epoch on each rank


def _ddp_train(
    tmp_path: Path, name: str, *overrides: str, expect_ok: bool = True
) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    """Run ``recstack-train trainer=ddp_cpu`` (audited) to completion; its records folder and its writes folder."""
    records, writes = tmp_path / name / "records", tmp_path / name / "writes"
    command = [
        sys.executable,
        str(HERE / "audited_train.py"),
        "trainer=ddp_cpu",
        "data=synthetic",
        "torch_threads=1",
        "progress=false",
        f"runs_root={tmp_path / 'runs'}",
        f"processed_root={tmp_path / 'processed'}",
        f"hydra.run.dir={tmp_path / name / 'hydra'}",
        f"fit.batch_size={BATCH}",
        "fit.patience=100",  # early stopping must not end the run early
        "+callbacks.rank_record._target_=rank_record.RankRecord",
        f"+callbacks.rank_record.out_dir={records}",
        *overrides,
    ]
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "HYDRA_FULL_ERROR": "1",
        "RECSTACK_TEST_WATCH": str(tmp_path / "runs"),
        "RECSTACK_TEST_WRITES": str(writes),
    }
    # Its own process group: on a timeout, rank 1 (started by rank 0) goes too, rather than wait on a collective.
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"DDP training still running after {RUN_TIMEOUT:.0f} s:\n{stdout[-3000:]}\n{stderr[-6000:]}")
    done = subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)
    if expect_ok:
        assert done.returncode == 0, (stdout[-3000:], stderr[-6000:])
    return done, records, writes


def _records(records: Path) -> list[dict]:
    found = [json.loads((records / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["global_rank"] for r in found] == [0, 1] and {r["world_size"] for r in found} == {2}
    return found


def _writes(writes: Path, rank: int) -> set[str]:
    """Paths rank ``rank`` wrote under the runs folder; its log file must exist (the hook ran in that process)."""
    logs = list(writes.glob(f"rank{rank}-*.txt"))
    assert len(logs) == 1, f"rank {rank}: expected one write log, found {logs}"
    return {line.split("\t", 1)[1] for line in logs[0].read_text().splitlines()}


def _epoch(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=False)["epoch"])


def test_lightgcn_under_ddp_shards_syncs_writes_once_survives_a_dead_rank_and_resumes(tmp_path: Path) -> None:
    """Rank 0 (the launcher) is killed hard (SIGKILL, as an out-of-memory kill) at the second batch of epoch 2: rank
    1, its orphan, ends non-zero at its next collective, saying what happened, instead of waiting on a collective that
    never completes (``communicate`` returns only once every process holding the output pipes, both ranks, has exited,
    so a hang fails on the timeout). Killing rank 1 instead was checked by hand once: rank 0 prints the same line, and
    Lightning's launcher would stop it anyway when its child dies. Epochs 0 and 1 before the kill show the sharding and
    the synchronisation; the resume from the killed run's last.ckpt finishes the run."""
    killed = 2  # the epoch rank 0 dies in, at its second batch (after both ranks finished its first)
    done, records, writes = _ddp_train(
        tmp_path,
        "first",
        "model=lightgcn",
        f"fit.max_epochs={killed + 1}",
        "+callbacks.kill._target_=rank_killer.KillRank",
        "+callbacks.kill.rank=0",
        f"+callbacks.kill.epoch={killed}",
        expect_ok=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0 and f"rank 1 {LOST_RANK_MESSAGE}" in output, output[-4000:]  # training.faults
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1, f"the ranks must share one run folder, found {runs}"  # rank 0 handed its folder down
    run = runs[0]
    first = _records(records)

    # Rank sharding: each rank trained on a disjoint half of every epoch's training rows. A (user, item) pair can
    # occur in several rows (several timestamps), so rows are compared as multisets: together the ranks used no
    # row more often than the training split holds it.
    split = PreparedSplit.load(_prepared_split(run))
    train_rows = Counter(zip(split.train["user_idx"].tolist(), split.train["item_idx"].tolist(), strict=True))
    for epoch in ("0", "1"):
        shares = [Counter(tuple(p) for p in rank["pairs"][epoch]) for rank in first]
        assert [shares[0].total(), shares[1].total()] == [len(split.train) // 2] * 2
        assert shares[0] + shares[1] <= train_rows
    assert first[0]["pairs"]["0"] != first[0]["pairs"]["1"]  # a fresh permutation each epoch

    # Gradient synchronisation: bit-identical parameters on both ranks after every optimiser step, and they moved.
    # (Both ranks finished the killed epoch's first step, and neither its second.)
    steps = first[0]["step_hashes"]
    assert len(steps) >= 2 * 8 + 1 and first[1]["step_hashes"] == steps
    assert [epoch for epoch, _ in steps].count(killed) == 1
    hashes = [h for _, h in steps]
    assert first[0]["start_hash"] == first[1]["start_hash"] != hashes[0]
    assert len(set(hashes)) == len(hashes)
    # The same validation figures, and the same stop decision, on both ranks after every epoch.
    assert first[0]["epochs"] == first[1]["epochs"] and [e["epoch"] for e in first[0]["epochs"]] == [0, 1]

    # Resume from the DDP checkpoint, as the dead rank's message says: both ranks restore its weights and train the
    # epochs after it only.
    last = run / "checkpoints" / "last.ckpt"
    saved = _epoch(last)
    assert saved == killed - 1  # last.ckpt is the last finished epoch
    resumed, records2, writes2 = _ddp_train(
        tmp_path, "resumed", "model=lightgcn", f"fit.max_epochs={saved + 2}", f"ckpt_path={last}", f"run_dir={run}"
    )
    assert f"Restored all states from the checkpoint at {last}" in resumed.stdout + resumed.stderr
    second = _records(records2)
    assert [sorted(r["pairs"]) for r in second] == [[str(saved + 1)]] * 2
    assert [e["epoch"] for e in second[0]["epochs"]] == [saved + 1]
    saved_weights = [h for epoch, h in steps if epoch == saved][-1]  # after the saved epoch's last step
    assert second[0]["start_hash"] == second[1]["start_hash"] == saved_weights
    assert second[0]["step_hashes"] == second[1]["step_hashes"]
    # The resumed epoch sees the same permutation as the killed run's (seeded by (seed, epoch)): its first batch on
    # each rank is the one that rank trained on before the kill.
    for before, after in zip(first, second, strict=True):
        head = before["pairs"][str(killed)]
        assert len(head) == BATCH and after["pairs"][str(killed)][: len(head)] == head
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == saved + 2 and metrics["test"]["ndcg@10"] > 0
    # Both ranks end with rank 0's test figures (one log line each, the same after the timestamp).
    tested = [
        line.split("]", 1)[1]
        for line in resumed.stdout.splitlines()
        if "[recstack.training.train][INFO] - test {" in line
    ]
    assert len(tested) == 2 and tested[0] == tested[1], tested

    # Only rank 0 wrote into the run folder, in both launches: config, checkpoints, metrics, logs; rank 1 nothing.
    wrote = {"first": _writes(writes, 0), "resumed": _writes(writes2, 0)}
    for launch, names in {
        "first": ["config.yaml", "checkpoints/best.ckpt", "checkpoints/last.ckpt"],
        "resumed": ["metrics.json", "checkpoints/last.ckpt", "csv/metrics.csv"],
    }.items():
        for name in names:
            assert str(run / name) in wrote[launch], (launch, name)
    assert _writes(writes, 1) == set() and _writes(writes2, 1) == set()


def test_mf_under_ddp_keeps_both_ranks_identical(tmp_path: Path) -> None:
    _, records, writes = _ddp_train(tmp_path, "mf", "model=mf", "fit.max_epochs=1", "logger={}")
    ranks = _records(records)
    assert ranks[0]["step_hashes"] and ranks[0]["step_hashes"] == ranks[1]["step_hashes"]
    assert ranks[0]["epochs"] == ranks[1]["epochs"]
    shares = [Counter(tuple(p) for p in rank["pairs"]["0"]) for rank in ranks]
    assert shares[0].total() == shares[1].total() > 0
    assert _writes(writes, 1) == set()
    (run,) = (tmp_path / "runs").iterdir()
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 1


def _prepared_split(run: Path) -> str:
    """The prepared split's folder, as the run's config.yaml records it."""
    from omegaconf import OmegaConf

    return str(OmegaConf.load(run / "config.yaml").prepared_split)
