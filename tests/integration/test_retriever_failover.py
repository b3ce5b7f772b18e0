"""Two retriever processes against one SeaweedFS: SIGKILL the ingestion lease holder mid-job, and
the other replica finishes the job with exactly the chunks the documents give (listed with boto3).

The scenario lives in `bench/scale_failover.py` (its benchmark runs the same thing on more
documents); here it runs on the session's SeaweedFS with a smaller corpus.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.scale_failover import FailoverHarness, corpus, failover

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]


async def test_killed_lease_holder_loses_and_duplicates_nothing(seaweed, tmp_path: Path) -> None:
    h = FailoverHarness(tmp_path, lease_s=3.0, write_batch=8)
    await h.start(seaweed.process)
    try:
        out = await failover(h, corpus(48, seed=11), collection="failover-test")
    finally:
        await h.stop()
    assert out["failover_job_state"] == 3, out  # JOB_STATE_SUCCEEDED
    assert 0 < out["failover_killed_at_documents_done"] < 48, out  # killed mid-job
    assert out["failover_new_holder"].startswith("replica-b"), out
    assert out["failover_resumed_at_documents_done"] > 0, out  # resumed, not restarted
    assert out["failover_job_lost_chunks"] == 0 and out["failover_duplicated_chunks"] == 0, out
    assert out["failover_indexed_chunks"] == out["failover_expected_chunks"] > 0, out
