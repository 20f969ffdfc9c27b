#!/usr/bin/env python3
"""A small ACP client that drives a real agent and records the traffic.

Standard library only. It starts the agent command, then:

    initialize     protocolVersion 1, fs.readTextFile/writeTextFile true, terminal false
    session/new    cwd = --cwd, mcpServers []
    session/prompt one per --prompt / --cancel-prompt, in order; a --cancel-prompt
                   sends session/cancel SECS seconds after the prompt went out
                   and waits for the prompt's answer (it should be stopReason
                   "cancelled")

and answers what the agent asks:

    session/request_permission -> the allow_once option (else the first allow_*,
                                  else the first option)
    fs/read_text_file          -> the file's text (line/limit honoured);
                                  a missing file reads as content ""
    fs/write_text_file         -> writes the file, only inside --cwd
    anything else              -> JSON-RPC error -32601

Every line both ways goes to --out as JSON lines in the format of
omk-core/tests/fixtures/wire-recordings/acp_kimi_cli.jsonl:

    {"t": <seconds since start>, "dir": "->" | "<-", "msg": {...}}
    {"t": ..., "dir": "<-", "raw": "<a stdout line that is not JSON>"}

Anything secret-looking (API keys, bearer tokens, values of keys named like
token/secret/password/apiKey) is replaced by "[REDACTED]"; paths are kept.

Usage:
    acp_drive.py --out rec.jsonl --cwd /tmp/work [--stderr agent.log] \\
        --prompt '[answer:hi]' --prompt '[write:hello.txt:hi]' \\
        --cancel-prompt 2 '[sleep:20]' -- node /abs/agent.js --acp
Exit status 0 when every step got an answer, 1 otherwise (a summary goes to stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time

SECRET_VALUE_RE = re.compile(
    r"(sk-ant-[A-Za-z0-9_\-]{4,}|sk-[A-Za-z0-9_\-]{4,}|(?i:bearer)\s+[A-Za-z0-9._\-]{8,}"
    r"|gh[pousr]_[A-Za-z0-9]{16,}|AKIA[0-9A-Z]{16}|xox[baprs]-[A-Za-z0-9\-]{8,})"
)
SECRET_KEY_RE = re.compile(r"(?i)(api[_-]?key|secret|password|passwd|access[_-]?token|refresh[_-]?token|auth[_-]?token|^token$|authorization)")


def scrub(obj):
    """Return a copy of obj with secret-looking strings redacted."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if isinstance(v, str) and v and SECRET_KEY_RE.search(str(k)):
                out[k] = "[REDACTED]"
            else:
                out[k] = scrub(v)
        return out
    if isinstance(obj, list):
        return [scrub(v) for v in obj]
    if isinstance(obj, str):
        return SECRET_VALUE_RE.sub("[REDACTED]", obj)
    return obj


class Recorder:
    def __init__(self, path: str):
        self.f = open(path, "w", encoding="utf-8")
        self.t0 = time.monotonic()
        self.lock = threading.Lock()

    def write(self, direction: str, msg=None, raw: str | None = None) -> None:
        rec = {"t": round(time.monotonic() - self.t0, 4), "dir": direction}
        if raw is not None:
            rec["raw"] = SECRET_VALUE_RE.sub("[REDACTED]", raw)
        else:
            rec["msg"] = scrub(msg)
        with self.lock:
            self.f.write(json.dumps(rec) + "\n")
            self.f.flush()

    def close(self) -> None:
        self.f.close()


class Client:
    def __init__(self, cmd: list[str], cwd: str, rec: Recorder, stderr_path: str | None, env: dict):
        self.cwd = os.path.realpath(cwd)
        self.rec = rec
        self.stderr_f = open(stderr_path, "wb") if stderr_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr_f,
            cwd=self.cwd,
            env=env,
        )
        self.wlock = threading.Lock()
        self.next_id = 1
        self.pending: dict[int, queue.Queue] = {}
        self.plock = threading.Lock()
        self.closed = threading.Event()
        self.updates_after: list = []
        self.reader = threading.Thread(target=self._read_loop, daemon=True)
        self.reader.start()

    # -- sending
    def _send(self, msg: dict) -> None:
        line = json.dumps(msg)
        self.rec.write("->", msg)
        with self.wlock:
            try:
                self.proc.stdin.write(line.encode() + b"\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError):
                pass

    def request(self, method: str, params: dict) -> tuple[int, queue.Queue]:
        with self.plock:
            rid = self.next_id
            self.next_id += 1
            q: queue.Queue = queue.Queue(1)
            self.pending[rid] = q
        self._send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        return rid, q

    def call(self, method: str, params: dict, timeout: float) -> dict:
        _, q = self.request(method, params)
        return self.wait(q, timeout, method)

    def wait(self, q: queue.Queue, timeout: float, what: str) -> dict:
        try:
            return q.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no answer to {what} within {timeout} s") from None

    def notify(self, method: str, params: dict) -> None:
        self._send({"jsonrpc": "2.0", "method": method, "params": params})

    def respond(self, rid, result=None, error=None) -> None:
        msg = {"jsonrpc": "2.0", "id": rid}
        if error is not None:
            msg["error"] = error
        else:
            msg["result"] = result
        self._send(msg)

    # -- receiving
    def _read_loop(self) -> None:
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if not line.strip():
                continue
            try:
                msg = json.loads(line)
            except ValueError:
                self.rec.write("<-", raw=line)
                continue
            if not isinstance(msg, dict):
                self.rec.write("<-", raw=line)
                continue
            self.rec.write("<-", msg)
            try:
                self._dispatch(msg)
            except Exception as e:  # never let one bad message kill the reader
                print(f"acp_drive: error handling {line[:200]}: {e!r}", file=sys.stderr)
        self.closed.set()
        with self.plock:
            for q in self.pending.values():
                try:
                    q.put_nowait({"error": {"code": -1, "message": "agent closed stdout"}})
                except queue.Full:
                    pass

    def _dispatch(self, msg: dict) -> None:
        if "method" in msg and "id" in msg:
            threading.Thread(target=self._serve, args=(msg,), daemon=True).start()
        elif "method" in msg:
            pass  # notifications are only recorded
        elif "id" in msg:
            with self.plock:
                q = self.pending.pop(msg["id"], None)
            if q is not None:
                q.put(msg)

    def _serve(self, msg: dict) -> None:
        rid, method, params = msg["id"], msg["method"], msg.get("params") or {}
        try:
            if method == "session/request_permission":
                self.respond(rid, self._permission(params))
            elif method == "fs/read_text_file":
                self.respond(rid, self._read_file(params))
            elif method == "fs/write_text_file":
                self.respond(rid, self._write_file(params))
            else:
                self.respond(rid, error={"code": -32601, "message": f"Method not found: {method}"})
        except OSError as e:
            self.respond(rid, error={"code": -32603, "message": f"{type(e).__name__}: {e}"})
        except ValueError as e:
            self.respond(rid, error={"code": -32602, "message": str(e)})

    @staticmethod
    def _permission(params: dict) -> dict:
        options = params.get("options") or []
        chosen = next((o for o in options if o.get("kind") == "allow_once"), None)
        chosen = chosen or next((o for o in options if str(o.get("kind", "")).startswith("allow")), None)
        chosen = chosen or (options[0] if options else None)
        if chosen is None:
            return {"outcome": {"outcome": "cancelled"}}
        return {"outcome": {"outcome": "selected", "optionId": chosen.get("optionId")}}

    def _read_file(self, params: dict) -> dict:
        path = params.get("path") or ""
        if not os.path.isabs(path):
            raise ValueError(f"path must be absolute: {path!r}")
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except FileNotFoundError:
            return {"content": ""}
        line, limit = params.get("line"), params.get("limit")
        if line or limit:
            lines = text.splitlines(keepends=True)
            start = max(0, int(line or 1) - 1)
            end = start + int(limit) if limit else len(lines)
            text = "".join(lines[start:end])
        return {"content": text}

    def _write_file(self, params: dict) -> dict:
        path = params.get("path") or ""
        if not os.path.isabs(path):
            raise ValueError(f"path must be absolute: {path!r}")
        real = os.path.realpath(path)
        if os.path.commonpath([real, self.cwd]) != self.cwd:
            raise ValueError(f"refusing to write outside the work dir {self.cwd}: {path}")
        os.makedirs(os.path.dirname(real), exist_ok=True)
        with open(real, "w", encoding="utf-8") as f:
            f.write(params.get("content") or "")
        return {}

    def close(self, grace: float) -> int:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            return self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                return self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait()
        finally:
            self.reader.join(timeout=5)


class StepAction(argparse.Action):
    def __call__(self, parser, ns, values, option_string=None):
        steps = getattr(ns, "steps", None) or []
        if option_string == "--prompt":
            steps.append((None, values))
        else:
            secs, text = values
            steps.append((float(secs), text))
        ns.steps = steps


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="JSONL recording to write")
    ap.add_argument("--cwd", required=True, help="work dir: session cwd, agent's cwd, fs write root")
    ap.add_argument("--stderr", default=None, help="write the agent's stderr here")
    ap.add_argument("--prompt", action=StepAction, dest="steps", help="a prompt to send (repeatable)")
    ap.add_argument("--cancel-prompt", action=StepAction, dest="steps", nargs=2, metavar=("SECS", "TEXT"),
                    help="a prompt cancelled with session/cancel after SECS seconds")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each answer")
    ap.add_argument("--settle", type=float, default=3.0,
                    help="seconds to keep listening after the last prompt's answer")
    ap.add_argument("cmd", nargs=argparse.REMAINDER, help="-- agent command line")
    args = ap.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        ap.error("no agent command given (put it after --)")
    os.makedirs(args.cwd, exist_ok=True)

    rec = Recorder(args.out)
    client = Client(cmd, args.cwd, rec, args.stderr, dict(os.environ))
    ok = True
    try:
        init = client.call(
            "initialize",
            {
                "protocolVersion": 1,
                "clientCapabilities": {"fs": {"readTextFile": True, "writeTextFile": True}, "terminal": False},
                "clientInfo": {"name": "omk-acp-drive", "version": "0.0.1"},
            },
            args.timeout,
        )
        if "error" in init:
            raise RuntimeError(f"initialize failed: {init['error']}")
        new = client.call("session/new", {"cwd": client.cwd, "mcpServers": []}, args.timeout)
        if "error" in new:
            raise RuntimeError(f"session/new failed: {new['error']}")
        sid = new["result"]["sessionId"]
        for cancel_after, text in getattr(args, "steps", None) or []:
            _, q = client.request("session/prompt", {"sessionId": sid, "prompt": [{"type": "text", "text": text}]})
            if cancel_after is not None:
                try:
                    ans = q.get(timeout=cancel_after)
                    print(f"acp_drive: prompt {text!r} answered before the cancel: {ans}", file=sys.stderr)
                    ok = False
                    continue
                except queue.Empty:
                    client.notify("session/cancel", {"sessionId": sid})
            ans = client.wait(q, args.timeout, f"session/prompt {text!r}")
            reason = (ans.get("result") or {}).get("stopReason")
            print(f"acp_drive: prompt {text!r} -> {reason or ans.get('error')}", file=sys.stderr)
            want = "cancelled" if cancel_after is not None else None
            if "error" in ans or (want and reason != want):
                ok = False
        time.sleep(args.settle)
    except (TimeoutError, RuntimeError, KeyError) as e:
        print(f"acp_drive: {e}", file=sys.stderr)
        ok = False
    finally:
        rc = client.close(grace=5)
        print(f"acp_drive: agent exited with {rc}", file=sys.stderr)
        rec.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
