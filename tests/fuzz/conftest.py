"""One real stack (`rag up`) for the whole fuzz package: gateway and gRPC fuzzing share it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testkit.stack import RunningStack, start_stack


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    s = start_stack(tmp_path_factory.mktemp("fuzz") / "data", extra_env={})
    try:
        yield s
    finally:
        s.stop()
