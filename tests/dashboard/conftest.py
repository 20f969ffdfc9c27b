"""Shared hooks for the dashboard tests: test_page.py skips without Chromium
locally, but in CI (CI=true or OMK_REQUIRE_PEERS=1) a missing Chromium -- any
skip -- is a failure."""

from __future__ import annotations

import os
from typing import Any, Iterator

import pytest


# ---- CI must not pass by skipping: with CI=true (CI services set it) or
# OMK_REQUIRE_PEERS=1 every skip in this suite -- a skipped test or a
# module skipped at collection (a missing peer) -- is reported as a failure.
# Locally, with neither set, skips stay skips.


def skips_refused() -> bool:
    return os.environ.get("CI") == "true" or os.environ.get("OMK_REQUIRE_PEERS") == "1"


def _refuse_skip(report: Any) -> None:
    if not (skips_refused() and report.skipped and not hasattr(report, "wasxfail")):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = (
        f"skip refused (CI=true or OMK_REQUIRE_PEERS=1: a missing peer is a failure): {reason}"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    _refuse_skip(outcome.get_result())  # type: ignore[attr-defined]


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    outcome = yield
    _refuse_skip(outcome.get_result())  # type: ignore[attr-defined]
