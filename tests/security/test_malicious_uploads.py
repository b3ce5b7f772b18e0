"""Malicious office files uploaded to the real stack (`rag up`): the retriever stays up (never
restarted by the supervisor), every service still serves, and each file is marked failed in its
job with a reason a person understands. A retriever restart or a missing reason counts in
`parser_bomb_crashes`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from testkit.faults.harness import record
from testkit.stack import RunningStack, start_stack
from tests.security import office_bombs

pytestmark = [pytest.mark.e2e]

PART_LIMIT = 64 * 1024 * 1024  # the default (`rag up` passes no DDNRAG_* setting to its children)
REASONS = {
    "gridspan.docx": "spans 2000000000 columns",
    "dimension.xlsx": "table rows",
    "oversized-part.docx": "limit per part",
    "nested-table.docx": "depth",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    s = start_stack(tmp_path_factory.mktemp("bombs") / "data")
    try:
        yield s
    finally:
        s.stop()


def _wait_job(url: str, job_id: str, timeout_s: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    job: dict[str, Any] = {}
    answers = []
    while time.monotonic() < deadline:
        resp = requests.get(f"{url}/api/ingestion/jobs/{job_id}", timeout=30)
        if resp.status_code != 200:  # a slow peer under load: answered with an error, asked again
            answers.append(f"{resp.status_code} {resp.text[:300]}")
            time.sleep(1)
            continue
        job = resp.json()["job"]
        if job["terminal"]:
            return job
        time.sleep(0.5)
    print(answers[-5:])
    raise AssertionError(f"the job did not end in {timeout_s} s: {job}")


def test_office_bombs_leave_the_retriever_up(stack: RunningStack) -> None:
    bombs = office_bombs.all_bombs(PART_LIMIT + 512 * 1024)
    files = [("file", (name, data, "application/octet-stream")) for name, data in bombs.items()]
    resp = requests.post(f"{stack.url}/api/documents", params={"collection": "bombs"}, files=files, timeout=120)
    assert resp.status_code == 202 or resp.status_code == 200, resp.text
    job = _wait_job(stack.url, resp.json()["job_id"])
    errors = {e["name"]: e["reason"] for e in job.get("file_errors", [])}
    missing = [n for n, why in REASONS.items() if why not in errors.get(n, "")]
    health = requests.get(f"{stack.url}/api/health", timeout=30)
    restarts = stack.output().count("retriever exited")
    record(
        "parser_bombs",
        {"parser_bomb_crashes": restarts + len(missing) + int(health.status_code != 200), "parser_bombs": len(bombs)},
    )
    assert not missing, (missing, errors, job)
    assert health.status_code == 200, health.text
    assert restarts == 0, stack.output()[-3000:]
    assert job["documents_done"] == len(bombs)  # each file reached its verdict
