"""Guard verdicts and the runner that applies the fail mode.

A guard checks the question (stage "input") or the answer (stage "output") and says allowed or
refused, with a reason. A guard that cannot answer (down, slow, malformed reply) raises
`GuardDown`; the runner then applies the fail mode: "closed" refuses the request (reason
GUARD_UNAVAILABLE), "open" lets it through. Either way the report says so: the system this
replaces failed open silently.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger(__name__)

STAGES = ("input", "output")
FAIL_MODES = ("open", "closed")


class GuardDown(Exception):
    """The guard could not give a verdict. The message is for people, without credentials."""


@dataclass(frozen=True)
class Verdict:
    """One guard's answer for one stage. `status`: "allowed", "refused", "failed_open" (down,
    let through by fail mode open) or "failed_closed" (down, refused by fail mode closed)."""

    guard: str
    stage: str
    status: str
    reason: str = ""
    message: str = ""
    categories: tuple[str, ...] = ()
    duration_ns: int = 0

    @property
    def refused(self) -> bool:
        return self.status in ("refused", "failed_closed")


class Guard(Protocol):
    """One check. `stages` says where it runs; `check` raises GuardDown when it cannot answer."""

    name: str
    stages: tuple[str, ...]

    async def check(self, stage: str, question: str, answer: str) -> Verdict: ...

    async def close(self) -> None: ...


@dataclass
class GuardReport:
    """Every verdict of one request, and the fail mode they ran under."""

    fail_mode: str
    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def refusal(self) -> Verdict | None:
        return next((v for v in self.verdicts if v.refused), None)

    @property
    def failed_open(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.status == "failed_open"]


class Guardrails:
    """Runs the configured guards of a stage concurrently, each within `timeout_s`."""

    def __init__(self, guards: Sequence[Guard], *, fail_mode: str = "closed", timeout_s: float = 5.0) -> None:
        if fail_mode not in FAIL_MODES:
            raise ValueError(f"guard fail mode must be one of {FAIL_MODES}, got {fail_mode!r}")
        self.guards = list(guards)
        self.fail_mode = fail_mode
        self.timeout_s = timeout_s

    def new_report(self) -> GuardReport:
        return GuardReport(self.fail_mode)

    async def run(self, stage: str, question: str, answer: str, report: GuardReport) -> Verdict | None:
        """Adds this stage's verdicts to `report`; returns the first refusal (None: go on)."""
        guards = [g for g in self.guards if stage in g.stages]
        if not guards:
            return None
        verdicts = await asyncio.gather(*(self._one(g, stage, question, answer) for g in guards))
        report.verdicts.extend(verdicts)
        return next((v for v in verdicts if v.refused), None)

    async def _one(self, guard: Guard, stage: str, question: str, answer: str) -> Verdict:
        t0 = time.perf_counter_ns()
        try:
            async with asyncio.timeout(self.timeout_s):
                v = await guard.check(stage, question, answer)
            return Verdict(v.guard, v.stage, v.status, v.reason, v.message, v.categories, time.perf_counter_ns() - t0)
        except (GuardDown, TimeoutError) as err:
            msg = (
                str(err)
                if isinstance(err, GuardDown)
                else f"guard {guard.name} did not answer within {self.timeout_s:g} s"
            )
            status = "failed_open" if self.fail_mode == "open" else "failed_closed"
            log.warning("guard down", extra={"guard": guard.name, "stage": stage, "outcome": status, "error": msg})
            return Verdict(
                guard.name,
                stage,
                status,
                "GUARD_UNAVAILABLE",
                f"{msg}; {'let through' if status == 'failed_open' else 'refused'} by fail mode {self.fail_mode}",
                duration_ns=time.perf_counter_ns() - t0,
            )

    async def close(self) -> None:
        for g in self.guards:
            await g.close()
