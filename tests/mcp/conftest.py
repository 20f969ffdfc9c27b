"""Shared setup for the MCP tests: the built `omk`, the scripted agent and a
scratch project with gates, all under a temp dir (nothing outside loopback)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
# Absolute: the servers run with cwd=<project>, so a relative OMK_BIN would not resolve.
OMK = str(Path(os.environ.get("OMK_BIN") or REPO / "target" / "debug" / "omk").resolve())
AGENT = str(REPO / "target" / "debug" / "omk-scripted-agent")
HERE = Path(__file__).resolve().parent

CONFIG = "[team]\nlease_secs = 20\nretry_backoff_ms = 50\nheartbeat_secs = 1\nstop_grace_secs = 2\nmax_attempts = 1\n"


@dataclass
class Env:
    root: Path
    state: Path
    project: Path
    vars: dict[str, str]

    def omk(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [OMK, *args], cwd=self.project, env=self.vars, capture_output=True, text=True,
            timeout=timeout,
        )


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    root = tmp_path.resolve()
    project = root / "project"
    (project / ".omk").mkdir(parents=True)
    (project / ".omk" / "gates.toml").write_text('[[gate]]\nname = "ok"\ncommand = "true"\n')
    (root / "xdg").mkdir()
    (root / "omk.toml").write_text(CONFIG)
    assert Path(OMK).exists() and Path(AGENT).exists(), "run cargo build --workspace first"
    base = {k: v for k, v in os.environ.items() if not k.startswith("OMK_")}
    base.update(
        OMK_STATE_DIR=str(root / "state"),
        OMK_KIMI_BIN=AGENT,
        OMK_CONFIG=str(root / "omk.toml"),
        XDG_CONFIG_HOME=str(root / "xdg"),
        NO_COLOR="1",
    )
    yield Env(root=root, state=root / "state", project=project, vars=base)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    pytest.fail(f"nothing listens on 127.0.0.1:{port} after {limit}s")


PYTHON = sys.executable


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
