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
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
OMK = os.environ.get("OMK_BIN") or str(REPO / "target" / "debug" / "omk")
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
