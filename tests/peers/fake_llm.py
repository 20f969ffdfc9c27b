#!/usr/bin/env python3
"""A scripted, OpenAI-compatible fake LLM for omk's end-to-end tests.

Standard library only; the directives, the HTTP server and the command line
are those every fake shares (fake_common.py). Serves on 127.0.0.1 only:

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

import json
import re
import sys
import time
import uuid

from fake_common import (DIRECTIVE_RE, FakeHandler, absolute, parse_directives, scripted_reply, serve, stream_pieces,
                         text_parts, token_counts)

MODEL = "fake-model"
SYSTEM_RE = re.compile(r"^\s*<system>(.*?)</system>\s*", re.S)
# qwen-code's and opencode's system prompts name the directory they work in.
WORKDIR_RE = re.compile(r"(?:I'm currently working in the directory|Working directory): (/\S+)")
TITLE_PROMPT = "You are a title generator"


# --------------------------------------------------------------------------- scripting


def _is_injected(text: str) -> bool:
    """Parts kimi adds on its own (system reminders) are not the user's prompt."""
    t = text.lstrip()
    return t.startswith("<system") and not DIRECTIVE_RE.search(t)


def last_prompt_text(messages: list) -> str:
    for msg in reversed(messages):
        if msg.get("role") == "user":
            parts = [p for p in text_parts(msg.get("content")) if not _is_injected(p)]
            return parts[-1] if parts else ""
    return ""


def _tool_content_text(content) -> str:
    return "".join(text_parts(content))


def _find_tool_call(messages: list, tool_call_id: str):
    for msg in reversed(messages):
        if msg.get("role") == "assistant":
            for tc in msg.get("tool_calls") or []:
                if tc.get("id") == tool_call_id:
                    return tc
    return None


def _workdir(messages: list) -> str | None:
    for m in messages:
        for t in text_parts(m.get("content")):
            found = WORKDIR_RE.search(t)
            if found:
                return found.group(1).rstrip(".")
    return None


def _is_title_request(messages: list) -> bool:
    """opencode's session-title request (not the user's turn)."""
    first = messages[0] if messages else {}
    return first.get("role") == "system" and "".join(text_parts(first.get("content"))).startswith(TITLE_PROMPT)


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
    opencode = "write" in tools and "bash" in tools and "WriteFile" not in tools

    def write(path: str, content: str) -> tuple:
        if opencode or ("write_file" in tools and "WriteFile" not in tools):
            path = absolute(path, _workdir(messages))
            if opencode:
                return ("write", {"filePath": path, "content": content})
            return ("write_file", {"file_path": path, "content": content})
        return ("WriteFile", {"path": path, "content": content})

    def run(cmd: str) -> tuple:
        if opencode:
            return ("bash", {"command": cmd})
        if "run_shell_command" in tools and "Shell" not in tools:
            return ("run_shell_command", {"command": cmd})
        return ("Shell", {"command": cmd})

    return scripted_reply(script, prompt, write, run)


def error_body(code: int, message: str) -> dict:
    """The server's own errors (a scripted [http-error] is of type "fake_error")."""
    return {"error": {"message": message, "type": "not_found" if code == 404 else "invalid_request_error"}}


# --------------------------------------------------------------------------- HTTP


class Handler(FakeHandler):
    server_version = "fake-llm/1.0"
    error_body = staticmethod(error_body)

    # -- routes
    def do_GET(self):
        path = self._route()
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
            self._no_route()

    def do_POST(self):
        path = self._route()
        try:
            body = self._read_json()
        except ValueError:
            self._record(error="bad json")
            self._send_json(400, error_body(400, "invalid JSON body"))
            return
        if not path.endswith("/chat/completions"):
            self._record(body=body)
            self._no_route()
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

        prompt_tokens, completion_tokens = token_counts(
            script,
            max(1, len(json.dumps(messages)) // 4),
            plan.get("text") or json.dumps(plan.get("tool", ("", {}))[1]),
        )
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
            deltas += [{"content": p} for p in stream_pieces(text, sleep_s)]
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
        events = [(True, chunk(d)) for d in deltas]
        events.append((False, chunk({}, "tool_calls" if tool_call else "stop")))
        events.append((False, chunk(usage_obj=usage, choices=False)))
        events.append((False, b"data: [DONE]\n\n"))
        self._send_events(events, sleep_s, cid)


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    return serve(Handler, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
