"""Ralph on the REAL kimi-cli 1.51.0 over Wire (offline, the fake LLM on
127.0.0.1): the first turn does not satisfy the gate; the gate's output, fed
back into the second turn's prompt, makes the model write the file through
an approved tool call; the gates pass and ralph stops at iteration 2.

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


def test_ralph_feeds_gate_output_back_to_real_kimi(tmp_path):
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
        # The fake LLM writes DONE only when the prompt carries this output.
        (work / ".omk" / "gates.toml").write_text(
            "[[gate]]\nname = \"done\"\n"
            "command = \"sh -c 'test -f DONE || { echo \\\"missing DONE: [write:DONE:fixed]\\\"; exit 1; }'\"\n"
        )
        r = subprocess.run(
            [OMK, "ralph", "Make the done gate pass", "--max-iterations", "3", "--json"],
            cwd=work, env=env, capture_output=True, text=True, timeout=300,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        state = json.loads(r.stdout)
        assert state["status"] == "complete", state
        assert state["iteration"] == 2
        assert state["iterations"][0]["gates_passed"] is False
        assert (work / "DONE").read_text() == "fixed"
        assert state["tokens"] > 0, "tokens from kimi's StatusUpdate events"
        requests = [json.loads(l) for l in (tmp_path / "llm-requests.jsonl").read_text().splitlines() if l]
        fed_back = [q for q in requests if "gate 'done' failed (exit 1)" in json.dumps(q)]
        assert fed_back, "the second turn's prompt carried the gate failure"
    finally:
        llm.stop()
