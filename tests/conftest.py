"""Shared test fixtures: the real data in ../shared (skipped cleanly when absent), seeds, temp caches."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from _shared_skips import register_if_ci  # tests/_shared_skips.py

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test with a reason if it is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real test data {p} is absent (../shared is not beside the repo)")
    return p


def pytest_configure(config):
    register_if_ci(config, SHARED)  # under CI, with ../shared present, a test that skipped for want of it fails the run


@pytest.fixture
def shared():
    return shared_path


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _restore_mirage_logger():
    """CLI tests install a rich handler on the "mirage" logger (and stop propagation); undo it after each test so
    caplog-based tests see the library's log records whatever ran before them."""
    import logging

    log = logging.getLogger("mirage")
    saved = (list(log.handlers), log.level, log.propagate)
    yield
    log.handlers[:] = saved[0]
    log.setLevel(saved[1])
    log.propagate = saved[2]


@pytest.fixture(scope="session", autouse=True)
def _test_env(tmp_path_factory):
    """Keep caches out of the user's home and make sure no test reaches the network."""
    cache = os.environ.get("MIRAGE_TEST_CACHE") or str(tmp_path_factory.mktemp("mirage-cache"))
    os.environ.setdefault("MIRAGE_CACHE", cache)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    yield


@pytest.fixture(autouse=True)
def _unfreeze_gc():
    """A Pipeline freezes the garbage collector's objects (PipelineConfig.freeze_gc); give them back after each test,
    so frozen objects do not pile up over the session."""
    import gc

    yield
    gc.unfreeze()
