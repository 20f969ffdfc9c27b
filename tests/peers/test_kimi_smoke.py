"""Smoke test: the REAL kimi-cli 1.51.0 over Wire, offline, against fake_llm.py.

Needs the venv made by tests/peers/setup-kimi.sh. If that script found no
Python >= 3.13 it left a `.unavailable` marker and this module is skipped with
its reason; a missing venv is skipped too. With CI=true, OMK_REQUIRE_KIMI=1 or
OMK_REQUIRE_PEERS=1 either is a failure instead (CI must test the real peer).

The tests share one kimi process and run in file order, like a real session:
initialize, a plain turn, an approved write, a rejected write, a cancel, a
provider error, then a clean exit when stdin closes.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from kimi_env import (  # noqa: E402
    KIMI_VERSION,
    FakeLLM,
    kimi_args,
    kimi_bin,
    kimi_env,
    kimi_venv,
    skip_unless_kimi,
)
from kimi_env import readline_with_timeout as _readline_with_timeout  # noqa: E402

skip_unless_kimi()

START_TIMEOUT = 60.0  # cold start is ~2 s, but the machine may be busy building
TURN_TIMEOUT = 30.0


# --------------------------------------------------------------------------- helpers


class WirePeer:
    """A minimal Wire (JSON-RPC 2.0 over stdio, one JSON object per line) client."""

    def __init__(self, argv: list[str], env: dict, cwd: Path):
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            start_new_session=True,  # own process group: cleanup can kill tool children too
        )
        self.inbox: queue.Queue = queue.Queue()
        self.stderr_lines: list[str] = []
        self.transcript: list[tuple[str, object]] = []
        self.stray_responses: list[dict] = []  # responses read while waiting for another id
        self._next = 0
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self):
        for line in self.proc.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                msg = json.loads(line)
            except ValueError:
                msg = {"_unparsed": line}
            self.transcript.append(("<-", msg))
            self.inbox.put(msg)
        self.inbox.put(None)  # EOF

    def _read_stderr(self):
        for line in self.proc.stderr:
            self.stderr_lines.append(line)

    def send(self, msg: dict) -> None:
        msg = {"jsonrpc": "2.0", **msg}
        self.transcript.append(("->", msg))
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()

    def request(self, method: str, params: dict | None = None) -> str:
        self._next += 1
        rid = f"{method}-{self._next}"  # ids MUST be strings
        self.send({"id": rid, "method": method, "params": params or {}})
        return rid

    def next_message(self, deadline: float) -> dict:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(self._diag("timed out waiting for kimi"))
        try:
            msg = self.inbox.get(timeout=remaining)
        except queue.Empty:
            raise TimeoutError(self._diag("timed out waiting for kimi")) from None
        if msg is None:
            raise EOFError(self._diag("kimi closed stdout"))
        return msg

    def wait_response(self, rid: str, timeout: float, on_request=None, on_event=None):
        """Read until the response with id ``rid``; returns (response, events, requests)."""
        deadline = time.monotonic() + timeout
        events: list[dict] = []
        requests: list[dict] = []
        while True:
            msg = self.next_message(deadline)
            if msg.get("method") == "event":
                events.append(msg["params"])
                if on_event:
                    on_event(msg["params"])
            elif msg.get("method") == "request":
                requests.append(msg)
                if on_request is None:
                    raise AssertionError(f"unexpected agent request: {msg}")
                on_request(msg)
            elif msg.get("id") == rid and ("result" in msg or "error" in msg):
                return msg, events, requests
            elif "id" in msg and ("result" in msg or "error" in msg):
                # a response to another outstanding request (e.g. cancel): keep it
                self.stray_responses.append(msg)

    def prompt(self, text: str, timeout: float = TURN_TIMEOUT, **kw):
        return self.wait_response(self.request("prompt", {"user_input": text}), timeout, **kw)

    def answer_approval(self, req: dict, response: str, feedback: str | None = None) -> None:
        payload = req["params"]["payload"]
        result = {"request_id": payload["id"], "response": response}
        if feedback is not None:
            result["feedback"] = feedback
        self.send({"id": req["id"], "result": result})

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()

    def _diag(self, what: str) -> str:
        tail = "\n".join(f"{d} {json.dumps(m)[:300]}" for d, m in self.transcript[-15:])
        return f"{what}; rc={self.proc.poll()}; stderr={''.join(self.stderr_lines)[-1000:]!r}\n{tail}"


def _types(events: list[dict]) -> list[str]:
    return [e["type"] for e in events]


def _text(events: list[dict]) -> str:
    return "".join(
        e["payload"].get("text", "")
        for e in events
        if e["type"] == "ContentPart" and e["payload"].get("type") == "text"
    )


def _remote_addresses(pid: int) -> set[str]:
    """Remote IPs of the TCP sockets currently open in process ``pid`` (Linux /proc)."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return set()
    remotes = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in lines:
            cols = row.split()
            if len(cols) < 10 or cols[9] not in inodes:
                continue
            hexip = cols[2].split(":")[0]
            raw = bytes.fromhex(hexip)
            # /proc stores each 32-bit word in host (little-endian) order
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            remotes.add(socket.inet_ntop(family, raw))
    return remotes


def _is_loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip in ("::1", "0.0.0.0", "::") or ip.startswith("::ffff:127.")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kimi")
    work = tmp / "work"
    work.mkdir()
    llm = FakeLLM(tmp / "llm-requests.jsonl")
    env, cfg = kimi_env(tmp, llm.port)
    peer = WirePeer([str(kimi_bin()), *kimi_args(cfg, work)], env, work)
    state = {"tmp": tmp, "work": work, "llm": llm, "peer": peer, "cfg": cfg, "remotes": set()}
    try:
        yield state
    finally:
        peer.kill()
        llm.stop()


def _sample_sockets(state) -> None:
    if state["peer"].proc.poll() is None:
        state["remotes"] |= _remote_addresses(state["peer"].proc.pid)


# --------------------------------------------------------------------------- tests (in order)


def test_initialize(session):
    peer: WirePeer = session["peer"]
    t0 = time.monotonic()
    rid = peer.request(
        "initialize",
        {"protocol_version": "1.10", "client": {"name": "omk-smoke", "version": "0.0.0"}},
    )
    resp, events, _ = peer.wait_response(rid, START_TIMEOUT)
    assert "error" not in resp, resp
    result = resp["result"]
    assert result["protocol_version"] == "1.10"
    assert result["server"] == {"name": "Kimi Code CLI", "version": KIMI_VERSION}
    print(f"kimi cold start to initialize reply: {time.monotonic() - t0:.2f} s")
    _sample_sockets(session)


def test_default_prompt(session):
    peer: WirePeer = session["peer"]
    resp, events, _ = peer.prompt("Say hello to the orchestrator.")
    assert resp.get("result") == {"status": "finished"}, resp
    types = _types(events)
    assert types[0] == "TurnBegin" and types[-1] == "TurnEnd", types
    assert events[0]["payload"]["user_input"] == "Say hello to the orchestrator."
    assert "StepBegin" in types
    usage = [e["payload"] for e in events if e["type"] == "StatusUpdate" and e["payload"].get("token_usage")]
    assert usage, types
    tu = usage[-1]["token_usage"]
    assert tu["input_other"] > 0 and tu["output"] > 0, tu
    assert types.index("TurnBegin") < types.index("StatusUpdate") < len(types) - 1
    assert _text(events) == "Done: Say hello to the orchestrator."
    _sample_sockets(session)


def test_token_directive_reaches_status_update(session):
    peer: WirePeer = session["peer"]
    resp, events, _ = peer.prompt("[json-plan:A|B|C] [tokens:1234:56]")
    assert resp.get("result") == {"status": "finished"}, resp
    assert json.loads(_text(events)) == ["A", "B", "C"]
    tu = [e["payload"]["token_usage"] for e in events if e["type"] == "StatusUpdate"][-1]
    assert tu["input_other"] == 1234 and tu["output"] == 56, tu


def test_write_approved(session):
    peer: WirePeer = session["peer"]
    approvals = []

    def approve(req):
        assert req["params"]["type"] == "ApprovalRequest", req
        payload = req["params"]["payload"]
        assert req["id"] == payload["id"]
        assert payload["sender"] == "WriteFile" and payload["action"] == "edit file", payload
        approvals.append(payload)
        peer.answer_approval(req, "approve")

    resp, events, _ = peer.prompt("[write:hello.txt:hi]", on_request=approve)
    assert resp.get("result") == {"status": "finished"}, resp
    assert len(approvals) == 1
    types = _types(events)
    assert "ToolCall" in types and "ApprovalResponse" in types and "ToolResult" in types, types
    call = next(e["payload"] for e in events if e["type"] == "ToolCall")
    assert call["function"]["name"] == "WriteFile"
    args = call["function"]["arguments"] + "".join(
        e["payload"]["arguments_part"] or "" for e in events if e["type"] == "ToolCallPart"
    )
    assert json.loads(args) == {"path": "hello.txt", "content": "hi"}
    result = next(e["payload"] for e in events if e["type"] == "ToolResult")
    assert result["return_value"]["is_error"] is False, result
    assert types.count("StepBegin") == 2, types
    assert _text(events) == "wrote hello.txt"
    assert (session["work"] / "hello.txt").read_text() == "hi"
    _sample_sockets(session)


def test_write_rejected(session):
    peer: WirePeer = session["peer"]

    def reject(req):
        peer.answer_approval(req, "reject", "do not touch that file")

    resp, events, reqs = peer.prompt("[write:nope.txt:should not exist]", on_request=reject)
    assert resp.get("result") == {"status": "finished"}, resp
    assert len(reqs) == 1
    echo = next(e["payload"] for e in events if e["type"] == "ApprovalResponse")
    assert echo["response"] == "reject" and echo["feedback"] == "do not touch that file"
    result = next(e["payload"] for e in events if e["type"] == "ToolResult")
    assert result["return_value"]["is_error"] is True, result
    assert "rejected" in result["return_value"]["message"]
    assert _text(events).startswith("WriteFile failed: ERROR")
    assert not (session["work"] / "nope.txt").exists()


def test_shell_approved_for_session(session):
    peer: WirePeer = session["peer"]

    def approve(req):
        payload = req["params"]["payload"]
        assert payload["sender"] == "Shell" and payload["action"] == "run command", payload
        peer.answer_approval(req, "approve_for_session")

    resp, events, reqs = peer.prompt("[run:echo shell-ran > shell.txt && cat shell.txt]", on_request=approve)
    assert resp.get("result") == {"status": "finished"}, resp
    assert len(reqs) == 1
    call = next(e["payload"] for e in events if e["type"] == "ToolCall")
    assert call["function"]["name"] == "Shell"
    result = next(e["payload"] for e in events if e["type"] == "ToolResult")
    assert result["return_value"]["output"] == "shell-ran\n", result
    assert _text(events) == "shell-ran\n"
    assert (session["work"] / "shell.txt").read_text() == "shell-ran\n"
    # approve_for_session: the same action is not asked again
    resp, events, reqs = peer.prompt("[run:echo again]", on_request=approve)
    assert resp.get("result") == {"status": "finished"} and reqs == [], (resp, reqs)
    assert _text(events) == "again\n"


def test_cancel_during_slow_stream(session):
    peer: WirePeer = session["peer"]
    rid = peer.request("prompt", {"user_input": "[sleep:5]"})
    deadline = time.monotonic() + TURN_TIMEOUT
    seen: list[dict] = []
    # wait until the LLM is streaming, then cancel
    while True:
        msg = peer.next_message(deadline)
        assert msg.get("id") != rid, f"turn ended before cancel: {msg}"
        if msg.get("method") == "event":
            seen.append(msg["params"])
            if msg["params"]["type"] == "ContentPart":
                break
    # mid-stream kimi holds an open connection to the fake LLM: it must be loopback
    live = _remote_addresses(peer.proc.pid)
    session["remotes"] |= live
    if os.path.exists("/proc/net/tcp"):
        assert "127.0.0.1" in live, live
    t0 = time.monotonic()
    cid = peer.request("cancel")
    resp, events, _ = peer.wait_response(rid, 10.0)
    elapsed = time.monotonic() - t0
    assert resp.get("result") == {"status": "cancelled"}, resp
    assert elapsed < 3.0, f"cancel took {elapsed:.2f} s"
    assert "TurnEnd" in _types(events)
    cancel_resp = [m for m in peer.stray_responses if m.get("id") == cid]
    if not cancel_resp:  # the cancel response may come after the prompt's
        cancel_resp = [peer.wait_response(cid, 5.0)[0]]
    assert cancel_resp[0].get("result") == {}, cancel_resp


def test_http_error_400(session):
    peer: WirePeer = session["peer"]
    t0 = time.monotonic()
    resp, events, _ = peer.prompt("[http-error:400]")
    assert "error" in resp, resp
    assert resp["error"]["code"] == -32003, resp
    assert "400" in resp["error"]["message"] and "scripted failure 400" in resp["error"]["message"]
    types = _types(events)
    assert "StepInterrupted" in types and types[-1] == "TurnEnd", types
    assert time.monotonic() - t0 < 5.0
    # WIRE.md 2.9.1: the cancelled prompt is still in the context, merged into
    # this user message; the fake LLM must have acted on the last directive.
    last = session["llm"].completions()[-1]
    assert last["prompt"] == "[http-error:400]"
    user_msgs = [m for m in last["body"]["messages"] if m["role"] == "user"]
    assert "[sleep:5]" in json.dumps(user_msgs[-1]["content"])


def test_close_stdin_exits_cleanly(session):
    peer: WirePeer = session["peer"]
    _sample_sockets(session)
    peer.proc.stdin.close()
    t0 = time.monotonic()
    rc = peer.proc.wait(5)
    assert rc == 0, peer._diag("bad exit")
    print(f"kimi exit after stdin close: {time.monotonic() - t0:.2f} s")
    # drain stderr: it only says how to resume the session
    deadline = time.monotonic() + 2
    while not any("kimi -r" in l for l in peer.stderr_lines) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any("To resume this session: kimi -r" in l for l in peer.stderr_lines), peer.stderr_lines


def test_network_stayed_on_loopback(session):
    llm: FakeLLM = session["llm"]
    records = llm.records()
    completions = llm.completions()
    assert len(completions) >= 8, len(completions)
    for r in records:
        if "client" in r:
            assert r["client"] == "127.0.0.1", r
            assert r["host"] == f"127.0.0.1:{llm.port}", r
    for r in completions:
        assert r["user_agent"].startswith(f"KimiCLI/{KIMI_VERSION}"), r["user_agent"]
        assert r["model"] == "fake-model"
        assert r["body"]["stream_options"] == {"include_usage": True}
    # every TCP socket kimi held while we looked pointed at loopback
    assert all(_is_loopback(ip) for ip in session["remotes"]), session["remotes"]
    # nothing was configured to go elsewhere
    assert "telemetry = false" in session["cfg"].read_text()
    assert llm.stop() == 0, "fake LLM did not exit cleanly on SIGTERM"
