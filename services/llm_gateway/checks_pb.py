"""Answer checks (checks.py) <-> ddnrag.llm.v1 messages: Verify, Refused, Guards."""

from __future__ import annotations

from ddnrag.llm.v1 import llm_service_pb2 as pb

from .checks import RefusedEvent, Repair, VerifyEvent
from .guards.base import GuardReport
from .verify.grounding import Verification


def guards_pb(report: GuardReport | None) -> pb.Guards | None:
    if report is None:
        return None
    return pb.Guards(
        fail_mode=report.fail_mode,
        verdicts=[
            pb.GuardVerdict(
                guard=v.guard,
                stage=v.stage,
                status=v.status,
                reason=v.reason,
                message=v.message,
                categories=list(v.categories),
                duration_ns=v.duration_ns,
            )
            for v in report.verdicts
        ],
        failed_open=bool(report.failed_open),
    )


def verification_pb(v: Verification | None) -> pb.Verification | None:
    if v is None:
        return None
    return pb.Verification(
        sentences=[
            pb.SentenceCheck(
                index=s.index, text=s.text, citations=list(s.citations), score=s.score, supported=s.supported
            )
            for s in v.sentences
        ],
        answer_score=v.answer_score,
        method=v.method,
        duration_ns=v.duration_ns,
    )


def repair_pb(r: Repair | None) -> pb.Repair | None:
    if r is None:
        return None
    return pb.Repair(
        kind=r.kind,
        text=r.text,
        verification=verification_pb(r.verification),
        added_passages=r.added_passages,
        message=r.message,
        duration_ns=r.duration_ns,
    )


def verify_pb(ev: VerifyEvent) -> pb.Verify:
    return pb.Verify(check=verification_pb(ev.verification), threshold=ev.threshold, repair=repair_pb(ev.repair))


def refused_pb(ev: RefusedEvent) -> pb.Refused:
    v = ev.verdict
    return pb.Refused(stage=v.stage, guard=v.guard, reason=v.reason, message=v.message, guards=guards_pb(ev.report))
