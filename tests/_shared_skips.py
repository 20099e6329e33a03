"""A pytest plugin of the test suite (not a test module): in CI, with ``../shared`` present, a test that skipped for
want of ``../shared`` fails the run.

Tests that need the real data skip cleanly when ``../shared`` is absent (a fresh clone). When it is present, such a
skip means a renamed or missing file, and the test silently stopped testing anything; so under ``CI`` the run
exits 1 and lists them. A skip "for want of ../shared" is one whose reason names the folder (the word ``shared``,
as every such reason in this suite does: "../shared is not beside the repo", "shared test data ... is absent").
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

_NAMES_SHARED = re.compile(r"(?<![\w-])shared(?![\w-])", re.IGNORECASE)  # the word "shared", as in ../shared/x


class SharedSkipGuard:
    """Collects the skips that name ``../shared``; turns a passing run into a failing one if there are any."""

    def __init__(self, shared: Path):
        self.shared = shared
        self.skips: list[str] = []  # "nodeid: reason"

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not report.skipped or hasattr(report, "wasxfail") or not isinstance(report.longrepr, tuple):
            return
        reason = str(report.longrepr[2]).removeprefix("Skipped: ")
        if _NAMES_SHARED.search(reason):
            self.skips.append(f"{report.nodeid}: {reason}")

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.skips and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.skips:
            return
        terminalreporter.section(f"{len(self.skips)} test(s) skipped for want of {self.shared}, which is present", red=True)
        for line in self.skips:
            terminalreporter.line(line, red=True)
        terminalreporter.line("a file these tests need is missing or renamed in ../shared: fix the path in the test "
                              "or restore the file (the check runs when CI is set)")


def register_if_ci(config: pytest.Config, shared: Path) -> None:
    """Install :class:`SharedSkipGuard` when ``$CI`` is set (non-empty) and ``shared`` is a folder."""
    if os.environ.get("CI") and shared.is_dir():
        config.pluginmanager.register(SharedSkipGuard(shared), "mirage-shared-skip-guard")
