"""Fixtures for the deid tests: the shared ground-truth data beside the repository."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# <repo root>/../shared/data/deid (CI clones the repo with shared/ beside it)
DEID_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "deid"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``slow`` unless TRIVAULT_SLOW=1 (also done by tests/conftest.py)."""
    if os.environ.get("TRIVAULT_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow test: set TRIVAULT_SLOW=1 to run")
    for item in items:
        if "slow" in item.keywords and not item.get_closest_marker("skip"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def deid_data() -> Path:
    """Path to shared/data/deid, or skip with a clear message."""
    if not (DEID_DATA / "scenes" / "faces.csv").is_file():
        pytest.skip(f"shared de-identification data not found at {DEID_DATA} (expected <repo>/../shared/data/deid)")
    return DEID_DATA
