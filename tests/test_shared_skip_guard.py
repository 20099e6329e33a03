"""The CI guard of tests/_shared_skips.py: with ../shared present and CI set, a skip for want of ../shared fails the
run; otherwise skips stay skips. Each case runs a real pytest session in a subprocess on a small test file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

TEST_FILE = '''
import pytest

def test_needs_shared_fixture():
    pytest.skip("real test data /somewhere/shared/images/room.png is absent (../shared is not beside the repo)")

@pytest.mark.skipif(True, reason="shared/points/garden.npz not available")
def test_needs_shared_mark():
    pass

def test_needs_cuda():
    pytest.skip("needs a CUDA device")

@pytest.mark.xfail(reason="known bug, unrelated to shared data")
def test_xfail():
    assert False

def test_passes():
    pass
'''


@pytest.fixture
def session_dir(tmp_path):
    """A folder with the test file and a conftest that installs the guard as tests/conftest.py does."""
    shared = tmp_path / "shared"
    root = tmp_path / "suite"
    root.mkdir()
    (root / "conftest.py").write_text(
        f"import sys\nfrom pathlib import Path\nsys.path.insert(0, {str(TESTS)!r})\n"
        "from _shared_skips import register_if_ci\n\n"
        f"def pytest_configure(config):\n    register_if_ci(config, Path({str(shared)!r}))\n"
    )
    (root / "test_sample.py").write_text(TEST_FILE)
    return root, shared


def _run(root: Path, *, ci: bool, args: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    if ci:
        env["CI"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *args, str(root)],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)


def test_ci_with_shared_present_fails_on_shared_skips(session_dir):
    root, shared = session_dir
    shared.mkdir()
    res = _run(root, ci=True)
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"2 test(s) skipped for want of {shared}, which is present" in res.stdout
    assert "test_sample.py::test_needs_shared_fixture: real test data" in res.stdout
    assert "test_sample.py::test_needs_shared_mark: shared/points/garden.npz not available" in res.stdout
    assert "test_needs_cuda:" not in res.stdout and "test_xfail:" not in res.stdout  # other skips stay skips


@pytest.mark.parametrize(("ci", "make_shared", "args"), [
    (False, True, ()),  # not CI: the guard is off
    (True, False, ()),  # ../shared absent (a fresh clone): skipping is the expected behaviour
    (True, True, ("-k", "cuda or xfail or passes")),  # CI, ../shared present, no skip names it
], ids=["not-ci", "shared-absent", "other-skips-only"])
def test_skips_stay_skips_otherwise(session_dir, ci, make_shared, args):
    root, shared = session_dir
    if make_shared:
        shared.mkdir()
    res = _run(root, ci=ci, args=args)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "skipped for want of" not in res.stdout
    assert " skipped" in res.stdout  # the skips did happen
