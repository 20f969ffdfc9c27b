"""One goal end to end on the REAL kimi-cli 1.51.0 over Wire (offline, the
fake LLM on 127.0.0.1): the planner turn, a wave that writes a file through
an approved tool call, the gate, and a `ready` proof with real token counts.

Skipped (with the reason) when setup-kimi.sh found no Python >= 3.13; with CI=true,
OMK_REQUIRE_KIMI=1 or OMK_REQUIRE_PEERS=1 a missing venv or the marker is a
failure instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from kimi_env import FakeLLM, omk_env, skip_unless_kimi  # noqa: E402

skip_unless_kimi()

# Absolute: omk runs with cwd=<project>, where a relative OMK_BIN would not resolve.
OMK = str(Path(os.environ.get("OMK_BIN") or HERE.parent.parent / "target" / "debug" / "omk").resolve())


def test_goal_reaches_ready_on_real_kimi(tmp_path):
    llm = FakeLLM(tmp_path / "llm-requests.jsonl")
    try:
        env = omk_env(tmp_path, llm.port)
        env["OMK_STATE_DIR"] = str(tmp_path / "state")
        env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
        cfg = tmp_path / "omk.toml"
        cfg.write_text("[team]\nstop_grace_secs = 3\nheartbeat_secs = 1\n")
        env["OMK_CONFIG"] = str(cfg)
        work = tmp_path / "proj"
        (work / ".omk").mkdir(parents=True)
        (work / ".omk" / "gates.toml").write_text(
            '[[gate]]\nname = "greeting"\ncommand = "grep -q \'hi from kimi\' hello.txt"\n'
        )

        def omk(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [OMK, *args], cwd=work, env=env, capture_output=True, text=True, timeout=300
            )

        r = omk("goal", "run", "Greet [json-plan:Write it [write:hello.txt:hi from kimi]]",
                "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        state = json.loads(r.stdout)
        assert state["status"] == "ready", state
        assert (work / "hello.txt").read_text() == "hi from kimi"

        proof = json.loads(omk("goal", "proof", "--json").stdout)
        assert proof["status"] == "ready" and proof["known_gaps"] == []
        assert proof["gates"][0]["passed"] is True
        assert "hello.txt" in proof["changed_files"]
        budget = json.loads(omk("goal", "budget", "--json").stdout)
        assert budget["used_tokens"] > 0, "tokens from kimi's StatusUpdate events"
        # The planner turn and the worker turn both reached the model.
        requests = [json.loads(l) for l in (tmp_path / "llm-requests.jsonl").read_text().splitlines() if l]
        assert len(requests) >= 2
    finally:
        llm.stop()
