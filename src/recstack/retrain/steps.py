"""Each step of a retrain run timed and logged, and its failure turned into the step's exit code."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from recstack.retrain.outcome import ExitCode, RetrainError

log = logging.getLogger("recstack.retrain")


@dataclass
class StepRecord:
    name: str
    seconds: float
    ok: bool


@dataclass
class Steps:
    """The steps run so far, in order, with their wall time."""

    records: list[StepRecord] = field(default_factory=list)

    @contextmanager
    def step(self, name: str, failure: ExitCode) -> Iterator[None]:
        """Time the block as step ``name``; an exception other than :class:`RetrainError` becomes one with code
        ``failure`` (its traceback logged), so every failure leaves with its class's exit code."""
        log.info("step %s: started", name)
        start = time.perf_counter()
        ok = False
        try:
            yield
            ok = True
        except RetrainError:
            raise
        except Exception as exc:
            log.exception("step %s failed", name)
            raise RetrainError(failure, f"{name}: {type(exc).__name__}: {exc}") from exc
        finally:
            seconds = time.perf_counter() - start
            self.records.append(StepRecord(name, seconds, ok))
            log.info("step %s: %s in %.1f s", name, "done" if ok else "FAILED", seconds)

    def seconds(self) -> dict[str, float]:
        return {r.name: round(r.seconds, 3) for r in self.records}

    def as_list(self) -> list[dict[str, object]]:
        return [{"step": r.name, "seconds": round(r.seconds, 3), "ok": r.ok} for r in self.records]
