"""Fixtures shared by unit test modules."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.k8s import render_all


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """The Kubernetes manifests, every target rendered once per process (tests/support/k8s.py):
    id -> objects. Used by test_k8s_manifests.py and test_k8s_policies.py."""
    return render_all()
