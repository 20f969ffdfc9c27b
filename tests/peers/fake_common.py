"""What the fake LLM servers of tests/peers share; not a script of its own.

fake_llm.py (OpenAI chat completions), fake_anthropic.py (Anthropic Messages),
fake_gemini.py (Gemini API) and fake_responses.py (OpenAI Responses API) keep
only their dialect: where the prompt sits in a request, which tools a
directive calls, the JSON and SSE shapes, the error bodies. This module holds
the rest, standard library only:

- the directives (DIRECTIVE_RE, parse_directives) and the reply they script
  (scripted_reply), which each fake's docstring lists with its tool names;
- helpers of the replies: excerpt, stream_pieces, fill_schema, token_counts;
- FakeLLMServer (the request log, a request counter, a stop event that cuts
  slow streams short), FakeHandler (JSON replies, log records, request
  bodies, HEAD, SSE with [sleep]) and serve(), the command line of every fake.
"""

from __future__ import annotations

import argparse
import itertools
import json
import posixpath
import re
import signal
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DIRECTIVE_RE = re.compile(
    r"\[(answer|write|run|sleep|http-error|json-plan|tokens):(.*?)\](?=[\s.,;:!?)\[\"']|$)", re.S
)
REPLY_KINDS = {"answer", "write", "run", "http-error", "json-plan"}
DISCONNECTS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


# --------------------------------------------------------------------------- scripting


def parse_directives(text: str) -> dict:
    """Return {"reply": (kind, arg) | None, "sleep": float | None, "tokens": (in, out) | None}."""
    script = plain_script()
    for m in DIRECTIVE_RE.finditer(text):
        kind, arg = m.group(1), m.group(2)
        if kind in REPLY_KINDS:
            script["reply"] = (kind, arg)
        elif kind == "sleep":
            try:
                script["sleep"] = max(0.0, float(arg))
            except ValueError:
                pass
        elif kind == "tokens":
            try:
                a, b = arg.split(":", 1)
                script["tokens"] = (int(a), int(b))
            except ValueError:
                pass
    return script


def plain_script(tokens: tuple[int, int] | None = None) -> dict:
    """A script without reply or [sleep] (side requests, follow-up steps), keeping ``tokens``."""
    return {"reply": None, "sleep": None, "tokens": tokens}


def excerpt(text: str, limit: int = 80) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 3] + "..."


def text_parts(content, types=("text",)) -> list[str]:
    """The texts of a message content: a string, or the parts of a list whose "type" is in ``types``."""
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    out = []
    for part in content:
        if isinstance(part, dict) and part.get("type") in types:
            out.append(part.get("text") or "")
    return out


def absolute(path: str, workdir: str | None) -> str:
    """``path`` made absolute against ``workdir`` (when it is relative and a workdir is known)."""
    if workdir and not path.startswith("/"):
        return posixpath.normpath(posixpath.join(workdir, path))
    return path


def scripted_reply(script: dict, prompt: str, write, run) -> dict:
    """The reply the prompt's directive asks for: {"text": s}, {"error": (code, message)},
    or {"tool": write(path, content)} / {"tool": run(cmd)}, the dialect's tool call."""
    reply = script["reply"]
    if reply is None:
        return {"text": f"Done: {excerpt(prompt)}"}
    kind, arg = reply
    if kind == "answer":
        return {"text": arg}
    if kind == "json-plan":
        items = [s.strip() for s in arg.split("|") if s.strip()]
        return {"text": json.dumps(items, separators=(",", ":"))}
    if kind == "write":
        path, _, content = arg.partition(":")
        return {"tool": write(path, content)}
    if kind == "run":
        return {"tool": run(arg)}
    if kind == "http-error":
        try:
            code = int(arg)
        except ValueError:
            code = 400
        return {"error": (code, f"scripted failure {code}")}
    return {"text": f"Done: {excerpt(prompt)}"}


def file_and_command_tools(write_tool: str, shell_tool: str, workdir):
    """The ``write`` and ``run`` of scripted_reply for agents whose tools take
    what Claude Code's and Gemini CLI's do: write_tool {"file_path": PATH made
    absolute against ``workdir()``, "content"}, shell_tool {"command", "description"}."""

    def write(path: str, content: str) -> tuple:
        return (write_tool, {"file_path": absolute(path, workdir()), "content": content})

    def run(cmd: str) -> tuple:
        return (shell_tool, {"command": cmd, "description": f"Run {excerpt(cmd, 40)}"})

    return write, run


def scripted_write_path(script: dict) -> str | None:
    """The PATH of the turn's [write:PATH:CONTENT], as the prompt wrote it (None without one)."""
    reply = script["reply"]
    return reply[1].partition(":")[0] if reply and reply[0] == "write" else None


def json_type(schema: dict):
    """A JSON schema's "type" (of a list of types, the first that is not "null")."""
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), "null")
    return t


def fill_schema(schema: dict, key: str = "", *, type_of=json_type, number=None, fixed=None):
    """A minimal value matching a JSON schema (structured-output side requests):
    an enum's first value, the required properties of an object, [], False, 0,
    None, and "ok" for a string ("Fake session" under a key naming a title).
    A dialect may read types its own way (``type_of``), choose numbers
    (``number(schema)``) and fix the values of some keys (``fixed``)."""
    t = type_of(schema)
    if schema.get("enum"):
        return schema["enum"][0]
    if fixed and key in fixed:
        return fixed[key]
    if t == "object":
        props = schema.get("properties") or {}
        required = schema.get("required") or props.keys()
        return {k: fill_schema(v or {}, k, type_of=type_of, number=number, fixed=fixed)
                for k, v in props.items() if k in required}
    if t == "array":
        return []
    if t == "boolean":
        return False
    if t in ("integer", "number"):
        return number(schema) if number else 0
    if t == "null":
        return None
    return "Fake session" if "title" in key.lower() else "ok"


def stream_pieces(text: str, sleep_s) -> list[str]:
    """``text`` cut into the deltas of a stream: two, or four a second of [sleep]."""
    n = max(2, int(sleep_s * 4)) if sleep_s else 2
    n = max(1, min(n, len(text)))
    size = -(-len(text) // n) if text else 1
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def token_counts(script: dict, input_tokens: int, produced: str | None) -> tuple[int, int]:
    """(input, output) tokens: those of [tokens:IN:OUT], else ``input_tokens``
    (the dialect's estimate) and the characters of ``produced`` / 4."""
    if script["tokens"]:
        return script["tokens"]
    return input_tokens, max(1, len(produced or "") // 4)


# --------------------------------------------------------------------------- HTTP


class FakeLLMServer(ThreadingHTTPServer):
    """The HTTP side every fake shares (each brings its own ``handler``): a
    request log, a request counter, and a stop event that cuts slow streams short."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, log_path: str | None, handler):
        super().__init__(addr, handler)
        self.log_path = log_path
        self.log_lock = threading.Lock()
        self.counter = itertools.count(1)
        self.stopping = threading.Event()

    def log_request_record(self, record: dict) -> None:
        if not self.log_path:
            return
        line = json.dumps(record, ensure_ascii=False)
        with self.log_lock, open(self.log_path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


class FakeHandler(BaseHTTPRequestHandler):
    """The plumbing of the fakes' handlers; a dialect sets the class
    attributes below, ``error_body(code, message)`` and its routes
    (``do_HEAD = FakeHandler.head_ok`` where HEAD is served)."""

    server: FakeLLMServer
    protocol_version = "HTTP/1.1"
    json_content_type = "application/json"
    sse_content_type = "text/event-stream"
    request_id_header: str | None = None  # names a fresh request id on every reply
    logged_headers: dict[str, str] = {}  # log record key -> request header, besides the common ones

    def log_message(self, format, *args):  # noqa: A002 - silence stderr access log
        pass

    @staticmethod
    def error_body(code: int, message: str) -> dict:
        raise NotImplementedError

    # -- helpers
    def _route(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/")

    def _send_request_id(self) -> None:
        if self.request_id_header:
            self.send_header(self.request_id_header, f"req_fake_{uuid.uuid4().hex[:16]}")

    def _send_json(self, code: int, obj) -> None:
        body = json.dumps(obj).encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", self.json_content_type)
            self.send_header("Content-Length", str(len(body)))
            self._send_request_id()
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except DISCONNECTS:
            self.close_connection = True

    def _record(self, **extra) -> None:
        self.server.log_request_record(
            {
                "t": time.time(),
                "client": self.client_address[0],
                "method": self.command,
                "path": self.path,
                "host": self.headers.get("Host"),
                "user_agent": self.headers.get("User-Agent"),
                **{key: self.headers.get(header) for key, header in self.logged_headers.items()},
                **extra,
            }
        )

    def _read_json(self):
        """The request's body read as JSON (an empty one as {}); ValueError if it is not JSON."""
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw or b"{}")

    def _read_body(self):
        """The request's JSON body, None if it is not JSON."""
        try:
            return self._read_json()
        except ValueError:
            return None

    def _json_body(self, **logged) -> dict | None:
        """The request's JSON object; else None, the request logged (with
        ``logged``) and answered 400 "invalid JSON body"."""
        body = self._read_body()
        if body is None or not isinstance(body, dict):
            self._record(error="bad json", **logged)
            self._send_json(400, self.error_body(400, "invalid JSON body"))
            return None
        return body

    def _begin_turn(self, plan: dict, body: dict, tools: list, **fields) -> int | None:
        """Number a model turn and log it (n, the dialect's ``fields``, side,
        prompt, tools, the reply, the body); answer a scripted [http-error] at
        once (None), else return n."""
        n = next(self.server.counter)
        self._record(
            n=n,
            **fields,
            side=bool(plan.get("side")),
            prompt=plan.get("prompt"),
            tools=tools,
            reply={k: v for k, v in plan.items() if k not in ("prompt", "side")},
            body=body,
        )
        if "error" in plan:
            code, message = plan["error"]
            self._send_json(code, self.error_body(code, message))
            return None
        return n

    def _no_route(self) -> None:
        self._send_json(404, self.error_body(404, f"no route {self.path}"))

    def head_ok(self) -> None:
        self._record()
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send_events(self, events: list[tuple[bool, bytes]], sleep_s, rid: str) -> None:
        """Stream an SSE reply of (is_delta, payload) events: [sleep] spreads
        the deltas over SECS seconds (a stop of the server cuts it short); a
        client gone mid-stream is logged as {"n_aborted": rid}."""
        n_deltas = sum(1 for d, _ in events if d) or 1
        interval = (sleep_s / n_deltas) if sleep_s else 0.0

        self.close_connection = True
        try:
            self.send_response(200)
            self.send_header("Content-Type", self.sse_content_type)
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self._send_request_id()
            self.end_headers()
            first_delta = True
            for is_delta, payload in events:
                if is_delta and interval:
                    if not first_delta and self.server.stopping.wait(interval):
                        return
                    first_delta = False
                self.wfile.write(payload)
                self.wfile.flush()
        except DISCONNECTS:
            # The client went away (e.g. the agent cancelled the turn mid-stream).
            self.server.log_request_record({"t": time.time(), "n_aborted": rid})


# --------------------------------------------------------------------------- main


def serve(handler, description: str | None, argv=None) -> int:
    """The command line of every fake: ``--port``, ``--log``, ``PORT <n>`` on
    stdout, a clean stop on SIGTERM/SIGINT."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = pick a free one)")
    ap.add_argument("--log", default=None, help="append one JSON line per request to this file")
    args = ap.parse_args(argv)

    server = FakeLLMServer(("127.0.0.1", args.port), args.log, handler)
    print(f"PORT {server.server_address[1]}", flush=True)

    def on_signal(signum, frame):
        server.stopping.set()
        # shutdown() blocks until serve_forever returns: call it from another thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
    return 0
