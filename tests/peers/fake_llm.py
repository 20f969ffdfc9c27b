#!/usr/bin/env python3
"""A scripted, OpenAI-compatible fake LLM for omk's end-to-end tests.

Standard library only. Serves on 127.0.0.1 only:

    GET  /v1/models                -> one model, "fake-model"
    POST /v1/chat/completions      -> SSE chunks when "stream": true, JSON otherwise

Usage:  python3 fake_llm.py --port 0 [--log requests.jsonl]
The first stdout line is ``PORT <n>`` (flushed). SIGTERM/SIGINT shut it down cleanly.

Replies are scripted by directives in the text of the LAST user message. Only
the last text part of that message counts (after a cancel, kimi merges the
dangling cancelled prompt and the new one into one user message with several
text parts, WIRE.md 2.9.1), and within it the last reply directive wins:

    (none)                 text "Done: <prompt excerpt>"
    [answer:TEXT]          text TEXT
    [write:PATH:CONTENT]   tool call WriteFile {"path": PATH, "content": CONTENT};
                           after the tool result: "wrote PATH"
                           (or "WriteFile failed: <error>" if it was rejected).
                           When the request offers qwen-code's write_file tool
                           instead: write_file {"file_path": PATH made absolute
                           against the working directory its system prompt
                           names, "content": CONTENT}. When it offers
                           opencode's write tool: write {"filePath": PATH made
                           absolute the same way ("Working directory: DIR" in
                           opencode's system prompt), "content": CONTENT}
    [run:CMD]              tool call Shell {"command": CMD} (qwen-code:
                           run_shell_command, opencode: bash); after the tool
                           result: the command output (or "Shell failed: <error>")
    [http-error:CODE]      HTTP status CODE with an OpenAI-style error body
                           (use 4xx: kimi and the OpenAI SDK retry 5xx and 429)
    [json-plan:A|B|C]      text ["A","B","C"]
Modifiers, combined with the reply:
    [sleep:SECS]           stream the reply slowly over SECS seconds (cancel tests)
    [tokens:IN:OUT]        report prompt_tokens=IN, completion_tokens=OUT

opencode also asks the model for a session title (a tool-less request whose
system prompt starts "You are a title generator"): that one gets the
"Done: ..." text at once, whatever the prompt's directives say.

Without [tokens], usage is estimated as characters / 4 (request messages for
prompt_tokens, reply text or tool arguments for completion_tokens).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import signal
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "fake-model"
DIRECTIVE_RE = re.compile(
    r"\[(answer|write|run|sleep|http-error|json-plan|tokens):(.*?)\](?=[\s.,;:!?)\[\"']|$)", re.S
)
REPLY_KINDS = {"answer", "write", "run", "http-error", "json-plan"}
SYSTEM_RE = re.compile(r"^\s*<system>(.*?)</system>\s*", re.S)
# qwen-code's and opencode's system prompts name the directory they work in.
WORKDIR_RE = re.compile(r"(?:I'm currently working in the directory|Working directory): (/\S+)")
TITLE_PROMPT = "You are a title generator"


# --------------------------------------------------------------------------- scripting


def _text_parts(content) -> list[str]:
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    out = []
    for part in content:
        if isinstance(part, dict) and part.get("type") == "text":
            out.append(part.get("text") or "")
    return out


def _is_injected(text: str) -> bool:
    """Parts kimi adds on its own (system reminders) are not the user's prompt."""
    t = text.lstrip()
    return t.startswith("<system") and not DIRECTIVE_RE.search(t)


def last_prompt_text(messages: list) -> str:
    for msg in reversed(messages):
        if msg.get("role") == "user":
            parts = [p for p in _text_parts(msg.get("content")) if not _is_injected(p)]
            return parts[-1] if parts else ""
    return ""


def parse_directives(text: str) -> dict:
    """Return {"reply": (kind, arg) | None, "sleep": float | None, "tokens": (in, out) | None}."""
    script = {"reply": None, "sleep": None, "tokens": None}
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


def excerpt(text: str, limit: int = 80) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 3] + "..."


def _tool_content_text(content) -> str:
    return "".join(_text_parts(content))


def _find_tool_call(messages: list, tool_call_id: str):
    for msg in reversed(messages):
        if msg.get("role") == "assistant":
            for tc in msg.get("tool_calls") or []:
                if tc.get("id") == tool_call_id:
                    return tc
    return None


def _workdir(messages: list) -> str | None:
    for m in messages:
        for t in _text_parts(m.get("content")):
            found = WORKDIR_RE.search(t)
            if found:
                return found.group(1).rstrip(".")
    return None


def _is_title_request(messages: list) -> bool:
    """opencode's session-title request (not the user's turn)."""
    first = messages[0] if messages else {}
    return first.get("role") == "system" and "".join(_text_parts(first.get("content"))).startswith(TITLE_PROMPT)


def plan_reply(messages: list, script: dict, prompt: str, tools: list | None = None) -> dict:
    """Decide the reply: {"error": (code, message)} | {"text": s} | {"tool": (name, args)}.
    ``tools`` names the tools the request offers (qwen-code's differ from kimi's)."""
    tools = tools or []
    last = messages[-1] if messages else {}
    if last.get("role") == "tool":
        # Follow-up step: the tool ran (or was rejected). Summarise and end the turn.
        raw = _tool_content_text(last.get("content"))
        tc = _find_tool_call(messages, last.get("tool_call_id", "")) or {}
        fn = tc.get("function") or {}
        name = fn.get("name", "tool")
        try:
            args = json.loads(fn.get("arguments") or "{}")
        except ValueError:
            args = {}
        m = SYSTEM_RE.match(raw)
        sys_msg, output = (m.group(1), raw[m.end():]) if m else ("", raw)
        if sys_msg.startswith("ERROR"):
            return {"text": f"{name} failed: {sys_msg}"}
        if name == "WriteFile":
            return {"text": f"wrote {args.get('path', '?')}"}
        if name == "write_file":
            if raw.lstrip().lower().startswith("error"):
                return {"text": f"write_file failed: {raw}"}
            return {"text": f"wrote {args.get('file_path', '?')}"}
        if name == "write":
            if raw.lstrip().lower().startswith("error"):
                return {"text": f"write failed: {raw}"}
            return {"text": f"wrote {args.get('filePath', '?')}"}
        if name in ("Shell", "run_shell_command", "bash"):
            return {"text": output if output.strip() else (sys_msg or "(no output)")}
        return {"text": f"{name} finished: {output or sys_msg}"}

    if prompt.lstrip().startswith("[SUGGESTION MODE"):
        # qwen-code's follow-up suggestions: not the user's turn.
        return {"text": ""}
    reply = script["reply"]
    if reply is None:
        return {"text": f"Done: {excerpt(prompt)}"}
    kind, arg = reply
    opencode = "write" in tools and "bash" in tools and "WriteFile" not in tools
    if kind == "answer":
        return {"text": arg}
    if kind == "json-plan":
        items = [s.strip() for s in arg.split("|") if s.strip()]
        return {"text": json.dumps(items, separators=(",", ":"))}
    if kind == "write":
        path, _, content = arg.partition(":")
        if opencode or ("write_file" in tools and "WriteFile" not in tools):
            wd = _workdir(messages)
            if wd and not path.startswith("/"):
                path = os.path.normpath(os.path.join(wd, path))
            if opencode:
                return {"tool": ("write", {"filePath": path, "content": content})}
            return {"tool": ("write_file", {"file_path": path, "content": content})}
        return {"tool": ("WriteFile", {"path": path, "content": content})}
    if kind == "run":
        if opencode:
            return {"tool": ("bash", {"command": arg})}
        if "run_shell_command" in tools and "Shell" not in tools:
            return {"tool": ("run_shell_command", {"command": arg})}
        return {"tool": ("Shell", {"command": arg})}
    if kind == "http-error":
        try:
            code = int(arg)
        except ValueError:
            code = 400
        return {"error": (code, f"scripted failure {code}")}
    return {"text": f"Done: {excerpt(prompt)}"}


def _split(s: str, n: int) -> list[str]:
    n = max(1, min(n, len(s)))
    size = -(-len(s) // n) if s else 1
    return [s[i : i + size] for i in range(0, len(s), size)] or [""]


# --------------------------------------------------------------------------- HTTP


class FakeLLMServer(ThreadingHTTPServer):
    """The HTTP side both fakes share (fake_anthropic.py brings its own
    ``handler``): a request log, a request counter, and a stop event that
    cuts slow streams short."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, log_path: str | None, handler=None):
        super().__init__(addr, handler or Handler)
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


class Handler(BaseHTTPRequestHandler):
    server: FakeLLMServer
    protocol_version = "HTTP/1.1"
    server_version = "fake-llm/1.0"

    def log_message(self, format, *args):  # noqa: A002 - silence stderr access log
        pass

    # -- helpers
    def _send_json(self, code: int, obj) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _record(self, **extra) -> None:
        self.server.log_request_record(
            {
                "t": time.time(),
                "client": self.client_address[0],
                "method": self.command,
                "path": self.path,
                "host": self.headers.get("Host"),
                "user_agent": self.headers.get("User-Agent"),
                **extra,
            }
        )

    # -- routes
    def do_GET(self):
        path = self.path.split("?", 1)[0].rstrip("/")
        self._record()
        if path.endswith("/models"):
            self._send_json(
                200,
                {
                    "object": "list",
                    "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "omk"}],
                },
            )
        else:
            self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

    def do_POST(self):
        path = self.path.split("?", 1)[0].rstrip("/")
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._record(error="bad json")
            self._send_json(400, {"error": {"message": "invalid JSON body", "type": "invalid_request_error"}})
            return
        if not path.endswith("/chat/completions"):
            self._record(body=body)
            self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
            return

        messages = body.get("messages") or []
        prompt = last_prompt_text(messages)
        script = parse_directives("" if _is_title_request(messages) else prompt)
        offered = [t.get("function", {}).get("name") for t in body.get("tools") or []]
        plan = plan_reply(messages, script, prompt, offered)
        n = next(self.server.counter)
        cid = f"chatcmpl-fake-{n}"
        self._record(
            n=n,
            model=body.get("model"),
            stream=bool(body.get("stream")),
            prompt=prompt,
            last_role=(messages[-1].get("role") if messages else None),
            tools=[t.get("function", {}).get("name") for t in body.get("tools") or []],
            reply=plan,
            body=body,
        )

        if "error" in plan:
            code, message = plan["error"]
            self._send_json(code, {"error": {"message": message, "type": "fake_error"}})
            return

        if script["tokens"]:
            prompt_tokens, completion_tokens = script["tokens"]
        else:
            prompt_tokens = max(1, len(json.dumps(messages)) // 4)
            produced = plan.get("text") or json.dumps(plan.get("tool", ("", {}))[1])
            completion_tokens = max(1, len(produced) // 4)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        created = int(time.time())
        tool_call = None
        if "tool" in plan:
            name, args = plan["tool"]
            tool_call = {
                "id": f"call_{uuid.uuid4().hex[:12]}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)},
            }

        if not body.get("stream"):
            message = {"role": "assistant", "content": plan.get("text")}
            if tool_call:
                message["tool_calls"] = [tool_call]
            self._send_json(
                200,
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": created,
                    "model": body.get("model") or MODEL,
                    "choices": [
                        {
                            "index": 0,
                            "message": message,
                            "finish_reason": "tool_calls" if tool_call else "stop",
                        }
                    ],
                    "usage": usage,
                },
            )
            return

        self._stream(cid, created, body.get("model") or MODEL, plan, tool_call, usage, script["sleep"])

    def _stream(self, cid, created, model, plan, tool_call, usage, sleep_s) -> None:
        def chunk(delta=None, finish=None, usage_obj=None, choices=True) -> bytes:
            obj = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": (
                    [{"index": 0, "delta": delta or {}, "finish_reason": finish}] if choices else []
                ),
            }
            if usage_obj is not None:
                obj["usage"] = usage_obj
            return b"data: " + json.dumps(obj).encode() + b"\n\n"

        deltas: list[dict] = []
        text = plan.get("text")
        if text:
            pieces = _split(text, max(2, int((sleep_s or 0) * 4)) if sleep_s else 2)
            deltas += [{"content": p} for p in pieces]
        if tool_call:
            args = tool_call["function"]["arguments"]
            half = len(args) // 2
            deltas.append(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": tool_call["id"],
                            "type": "function",
                            "function": {"name": tool_call["function"]["name"], "arguments": args[:half]},
                        }
                    ]
                }
            )
            deltas.append({"tool_calls": [{"index": 0, "function": {"arguments": args[half:]}}]})
        if deltas:
            deltas[0] = {"role": "assistant", **deltas[0]}
        interval = (sleep_s / len(deltas)) if sleep_s and deltas else 0.0

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            for i, d in enumerate(deltas):
                if i and interval:
                    if self.server.stopping.wait(interval):
                        return
                self.wfile.write(chunk(d))
                self.wfile.flush()
            self.wfile.write(chunk({}, "tool_calls" if tool_call else "stop"))
            self.wfile.write(chunk(usage_obj=usage, choices=False))
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            # The client went away (e.g. kimi cancelled the turn mid-stream).
            self.server.log_request_record({"t": time.time(), "n_aborted": cid})


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    return serve(Handler, __doc__, argv)


def serve(handler, description: str | None, argv=None) -> int:
    """The command line of both fakes: ``--port``, ``--log``, ``PORT <n>`` on
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


if __name__ == "__main__":
    sys.exit(main())
