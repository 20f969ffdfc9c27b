"""End to end: `omk chat` through a pipe, talking to the REAL kimi-cli 1.51.0
over Wire, offline, against fake_llm.py on 127.0.0.1.

One kimi process serves every turn of a session; a resumed session is
reopened by kimi itself (`--session`, then `replay`), so the LLM sees the
earlier turns. Skipped (with the reason) when setup-kimi.sh found no
Python >= 3.13; with CI=true,
OMK_REQUIRE_KIMI=1 or OMK_REQUIRE_PEERS=1 a missing venv or the marker is a
failure instead.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from kimi_env import FakeLLM, omk_env, skip_unless_kimi  # noqa: E402

skip_unless_kimi()

# Absolute: omk runs with cwd=<project>, where a relative OMK_BIN would not resolve.
OMK = str(Path(os.environ.get("OMK_BIN") or HERE.parent.parent / "target" / "debug" / "omk").resolve())
SECRET = "sk-proj-Qw7Er4Ty1Ui8Op5As2Df9Gh3"
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.fixture()
def rig(tmp_path):
    llm = FakeLLM(tmp_path / "llm-requests.jsonl")
    env = omk_env(tmp_path, llm.port)
    env["OMK_STATE_DIR"] = str(tmp_path / "state")
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    env.pop("NO_COLOR", None)
    cfg = tmp_path / "omk.toml"
    cfg.write_text("[team]\nstop_grace_secs = 3\n")
    env["OMK_CONFIG"] = str(cfg)
    work = tmp_path / "proj"
    work.mkdir()
    try:
        yield {"env": env, "work": work, "state": tmp_path / "state", "llm": llm}
    finally:
        llm.stop()


def chat(rig, *args, stdin: str, timeout=120):
    return subprocess.run(
        [OMK, "chat", *args], cwd=rig["work"], env=rig["env"], input=stdin,
        capture_output=True, text=True, timeout=timeout,
    )


def sessions(rig) -> list[str]:
    root = rig["state"] / "sessions"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def jsonl(rig, sid: str, name: str) -> list[dict]:
    text = (rig["state"] / "sessions" / sid / name).read_text()
    return [json.loads(line) for line in text.splitlines()]


def conversation(rig, sid: str) -> list[tuple[str, str]]:
    out = []
    for rec in jsonl(rig, sid, "conversation.jsonl"):
        assert list(rec) == ["ts", "role", "text"], rec
        assert TS.match(rec["ts"]), rec
        assert rec["role"] in ("user", "assistant"), rec
        out.append((rec["role"], rec["text"]))
    return out


def test_chat_session_with_real_kimi_then_resume(rig):
    r = chat(
        rig, "--new",
        stdin=f"[answer:first kimi answer]\nmy key is {SECRET} [answer:second]\n[write:k.txt:from kimi chat]\n",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["first kimi answer", "second", "wrote k.txt"], r.stdout
    assert (rig["work"] / "k.txt").read_text() == "from kimi chat"
    [sid] = sessions(rig)
    conv = conversation(rig, sid)
    assert [role for role, _ in conv] == ["user", "assistant"] * 3
    assert conv[1][1] == "first kimi answer" and "[REDACTED]" in conv[2][1]
    for f in (rig["state"] / "sessions" / sid).iterdir():
        assert SECRET not in f.read_text(), f
    events = jsonl(rig, sid, "engine-events.jsonl")
    assert sum(e["type"] == "agent_start" for e in events) == 1, "one kimi for the session"
    kinds = {e["type"] for e in events}
    assert {"TurnBegin", "StepBegin", "ContentPart", "StatusUpdate", "ToolCall", "ToolResult", "TurnEnd"} <= kinds
    approvals = [e for e in events if e["type"] == "approval"]
    assert approvals and approvals[0]["payload"]["decision"]["response"] == "approve"
    turn_ends = [e["payload"] for e in events if e["type"] == "turn_end"]
    assert [t["status"]["status"] for t in turn_ends] == ["finished"] * 3
    assert all(t["usage"]["output"] > 0 for t in turn_ends), turn_ends

    # Resume: kimi reopens its own session and the LLM sees the earlier turns.
    before = len(rig["llm"].completions())
    r = chat(rig, "--session", sid, stdin="[answer:resumed answer]\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "resumed answer\n", r.stdout
    assert "first kimi answer" in r.stderr, "the earlier turns are shown"
    resume = [e for e in jsonl(rig, sid, "engine-events.jsonl") if e["type"] == "resume"]
    assert resume and resume[-1]["payload"]["mode"] == "agent", resume
    new = rig["llm"].completions()[before:]
    sent = json.dumps(new[-1]["body"]["messages"])
    assert "first kimi answer" in sent and "wrote k.txt" in sent, sent[:2000]
    assert len(conversation(rig, sid)) == 8


def test_ctrl_c_cancels_a_real_kimi_turn_and_the_session_goes_on(rig):
    proc = subprocess.Popen(
        [OMK, "chat", "--new"], cwd=rig["work"], env=rig["env"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    seen = bytearray()

    def pump():
        while True:
            b = proc.stdout.read1(4096)
            if not b:
                return
            seen.extend(b)

    threading.Thread(target=pump, daemon=True).start()

    def wait(needle: bytes, limit=60.0):
        deadline = time.monotonic() + limit
        while needle not in seen:
            assert time.monotonic() < deadline, f"no {needle!r} in {bytes(seen)!r}"
            time.sleep(0.05)

    try:
        proc.stdin.write(b"[sleep:30] [answer:one two three four five six seven eight nine ten]\n")
        proc.stdin.flush()
        wait(b"one")
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.stdin.write(b"[answer:after the cancel]\n")
        proc.stdin.close()
        wait(b"after the cancel")
        assert proc.wait(60) == 0
        assert time.monotonic() - started < 25, "the cancel did not cut the slow turn"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    [sid] = sessions(rig)
    events = jsonl(rig, sid, "engine-events.jsonl")
    assert [e["payload"]["how"] for e in events if e["type"] == "cancel"] == ["cancel"]
    statuses = [e["payload"]["status"]["status"] for e in events if e["type"] == "turn_end"]
    assert statuses == ["cancelled", "finished"]
    conv = conversation(rig, sid)
    assert conv[-1] == ("assistant", "after the cancel")
    assert sum(e["type"] == "agent_start" for e in events) == 1
