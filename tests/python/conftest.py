"""Fixtures for the Python binding tests (run against the installed wheel).

Every test gets its own temp root holding a state dir, a project dir, an
XDG config dir and a config file with short team timings, and runs the
bundled scripted agent (``OMK_KIMI_BIN``, default
``<repo>/target/debug/omk-scripted-agent``). Agents are started with
``--work-dir <project>``, so every process of a test names its root in its
argv; teardown kills any such process a failed test left behind.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

import omk

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
AGENT = os.environ.get("OMK_KIMI_BIN") or str(REPO / "target" / "debug" / "omk-scripted-agent")
STUB = Path(omk.__file__).with_name("_omk.pyi")

# `[health] min_free_disk_mb = 1`: the tests that expect a healthy doctor
# test omk, not the free space of the machine running them (the disk check
# has its own tests in omk-core's health.rs).
CONFIG = """\
[team]
heartbeat_secs = 1
stop_grace_secs = 2
retry_backoff_ms = 50

[health]
min_free_disk_mb = 1
"""

T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T | None], limit: float = 20.0) -> T:
    """Poll ``check`` until it returns something truthy, or fail after ``limit`` s."""
    deadline = time.monotonic() + limit
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {limit}s waiting for {what}")
        time.sleep(0.05)


def proc_alive(pid: int) -> bool:
    """True while ``pid`` runs (zombies count as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


@dataclass
class Env:
    root: Path
    state: Path
    project: Path
    config: Path

    def omk(self) -> omk.Omk:
        return omk.Omk(state_dir=self.state, project_dir=self.project, config=self.config)

    def team_dir(self, name: str) -> Path:
        return self.state / "team" / name

    def events(self, name: str) -> list[dict[str, Any]]:
        path = self.team_dir(name) / "events.jsonl"
        out = []
        for line in path.read_text().splitlines() if path.exists() else []:
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def agent_pids(self, name: str) -> list[int]:
        return [
            int(e["payload"]["agent_pid"]) for e in self.events(name) if e["kind"] == "worker_started"
        ]

    def own_processes(self) -> list[int]:
        """Processes (not zombies) whose argv names this test's root."""
        marker = str(self.root).encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if marker in cmdline and proc_alive(int(entry.name)):
                pids.append(int(entry.name))
        return pids

    def script(self, body: str) -> list[str]:
        """argv running ``body`` with this interpreter, with ``STATE``,
        ``PROJECT`` and ``CONFIG`` defined."""
        prelude = (
            f"STATE = {str(self.state)!r}\nPROJECT = {str(self.project)!r}\n"
            f"CONFIG = {str(self.config)!r}\n"
        )
        path = self.root / "script.py"
        path.write_text(prelude + body)
        return [sys.executable, str(path)]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    root = tmp_path.resolve()
    e = Env(root=root, state=root / "state", project=root / "project", config=root / "omk.toml")
    e.project.mkdir()
    (root / "xdg").mkdir()
    e.config.write_text(CONFIG)
    assert Path(AGENT).exists(), f"no scripted agent at {AGENT}: run cargo build --workspace"
    monkeypatch.setenv("OMK_KIMI_BIN", AGENT)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(root / "xdg"))
    monkeypatch.setenv("NO_COLOR", "1")
    for var in (
        "OMK_STATE_DIR",
        "OMK_CONFIG",
        "OMK_STORE",
        "OMK_KIMI_ARGS",
        "OMK_AGENT_PROTOCOL",
        "OMK_SCRIPTED_BEHAVIOUR",
        "XDG_STATE_HOME",
        "RUST_LOG",
    ):
        monkeypatch.delenv(var, raising=False)
    yield e
    # A failed test must not leave agents or scripts behind.
    for pid in e.own_processes():
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


@pytest.fixture
def client(env: Env) -> omk.Omk:
    return env.omk()


def stub_keys(name: str) -> tuple[set[str], set[str]]:
    """(required, optional) keys of the TypedDict ``name`` in ``_omk.pyi``,
    bases included, so tests can hold the stubs to the real documents."""
    tree = ast.parse(STUB.read_text())
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}

    def collect(cls_name: str) -> tuple[set[str], set[str]]:
        cls = classes[cls_name]
        required: set[str] = set()
        optional: set[str] = set()
        for base in cls.bases:
            if isinstance(base, ast.Name) and base.id in classes:
                r, o = collect(base.id)
                required |= r
                optional |= o
        for stmt in cls.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                ann = ast.unparse(stmt.annotation)
                (optional if ann.startswith("NotRequired[") else required).add(stmt.target.id)
        return required, optional

    return collect(name)


def assert_shape(doc: dict[str, Any], typed_dict: str) -> None:
    """``doc`` has every required key of the stub's TypedDict and no key the
    stub does not know."""
    required, optional = stub_keys(typed_dict)
    keys = set(doc)
    assert required <= keys, f"{typed_dict}: missing {required - keys} in {doc}"
    assert keys <= required | optional, f"{typed_dict}: unknown {keys - required - optional}"


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
