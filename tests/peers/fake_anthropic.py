#!/usr/bin/env python3
"""A scripted fake of the Anthropic Messages API for omk's end-to-end tests.

Standard library only; the twin of fake_llm.py (same CLI, same directives, both
from fake_common.py) for agents that speak Anthropic's dialect (Claude Code,
through the ACP adapter @agentclientprotocol/claude-agent-acp). Serves on
127.0.0.1 only:

    POST /v1/messages              -> SSE when "stream": true, JSON otherwise
    POST /v1/messages/count_tokens -> {"input_tokens": n}
    GET  /v1/models[/ID]           -> a few Claude model ids
    anything else                  -> 404 with an Anthropic error body, at once

Usage:  python3 fake_anthropic.py --port 0 [--log requests.jsonl]
The first stdout line is ``PORT <n>`` (flushed). SIGTERM/SIGINT shut it down cleanly.

Replies are scripted by directives in the text of the LAST user message (its
last text block that is not a ``<system-reminder>`` Claude Code injected); the
last reply directive wins:

    (none)                 text "Done: <prompt excerpt>"
    [answer:TEXT]          text TEXT
    [write:PATH:CONTENT]   tool_use Write {"file_path": ABS, "content": CONTENT}
                           (ABS = PATH made absolute against the "Working
                           directory" of Claude Code's system prompt); after the
                           tool_result: "wrote PATH" (or "Write failed: <error>")
    [run:CMD]              tool_use Bash {"command": CMD, "description": ...};
                           after the tool_result: its output (or "Bash failed: ...")
    [http-error:CODE]      HTTP status CODE with an Anthropic-style error body
                           (use 4xx: the SDK retries 5xx and 429)
    [json-plan:A|B|C]      text ["A","B","C"]
Modifiers, combined with the reply:
    [sleep:SECS]           stream the reply slowly over SECS seconds (cancel tests)
    [tokens:IN:OUT]        report input_tokens=IN, output_tokens=OUT

Claude Code also makes side requests of its own: title generation (no tools,
a JSON schema in output_config.format), quota probes and haiku calls (no
tools), and the prompt-suggestion fork (all the tools, a "[SUGGESTION MODE"
prompt). Those never run a directive, so a [sleep] prompt does not also stall
them: a structured-output request gets a minimal object matching its schema
(a title is "Fake session"), a suggestion request an empty message ("stay
silent"), anything else "ok".

Without [tokens], usage is estimated as characters / 4. Every request is
logged as one JSON line (with the full body) when --log is given.
"""

from __future__ import annotations

import json
import re
import sys
import uuid

from fake_common import (DIRECTIVE_RE, FakeHandler, file_and_command_tools, fill_schema, parse_directives, plain_script,
                         scripted_reply, scripted_write_path, serve, stream_pieces, text_parts, token_counts)

MODELS = ["claude-sonnet-4-5", "claude-opus-4-1", "claude-haiku-4-5"]
WORKDIR_RE = re.compile(r"(?:Primary working directory|Working directory|cwd):\s*(/[^\s<>\"']*)")
WRITE_TOOL = "Write"
SHELL_TOOL = "Bash"


# --------------------------------------------------------------------------- scripting


def _is_injected(text: str) -> bool:
    """Blocks Claude Code adds on its own (system reminders, hook output) are not the prompt."""
    t = text.lstrip()
    return (
        t.startswith("<system-reminder>")
        or t.startswith("<local-command")
        or t.startswith("<command-")
        or (t.startswith("<system") and not DIRECTIVE_RE.search(t))
    )


def _user_prompt_parts(msg: dict) -> list[str]:
    return [p for p in text_parts(msg.get("content")) if not _is_injected(p)]


def last_prompt_text(messages: list) -> str:
    """The last human text of the conversation (skipping tool_result-only user messages)."""
    for msg in reversed(messages):
        if msg.get("role") == "user":
            parts = _user_prompt_parts(msg)
            if parts:
                return parts[-1]
            if not _tool_results(msg):
                return ""
    return ""


def system_text(body: dict) -> str:
    system = body.get("system")
    if isinstance(system, str):
        return system
    return "\n".join(text_parts(system or []))


def find_workdir(body: dict) -> str | None:
    """Claude Code states its cwd in the system prompt (or in a first-turn reminder)."""
    texts = [system_text(body)]
    for msg in body.get("messages") or []:
        texts.extend(text_parts(msg.get("content")))
    for t in texts:
        m = WORKDIR_RE.search(t)
        if m:
            return m.group(1).rstrip(".,;:")
    return None


def _tool_results(msg: dict) -> list[dict]:
    content = msg.get("content")
    if not isinstance(content, list):
        return []
    return [p for p in content if isinstance(p, dict) and p.get("type") == "tool_result"]


def _find_tool_use(messages: list, tool_use_id: str):
    for msg in reversed(messages):
        if msg.get("role") == "assistant" and isinstance(msg.get("content"), list):
            for part in msg["content"]:
                if isinstance(part, dict) and part.get("type") == "tool_use" and part.get("id") == tool_use_id:
                    return part
    return None


def _result_text(result: dict) -> str:
    content = result.get("content")
    return "".join(text_parts(content)) if not isinstance(content, str) else content


SUGGESTION_MARK = "[SUGGESTION MODE"


def is_side_request(body: dict, prompt: str) -> bool:
    """Title/topic generation, quota probes and similar calls carry no tools;
    the prompt-suggestion fork carries the tools but a "[SUGGESTION MODE" prompt."""
    return not body.get("tools") or prompt.lstrip().startswith(SUGGESTION_MARK)


def side_reply(body: dict, prompt: str) -> str:
    if prompt.lstrip().startswith(SUGGESTION_MARK):
        return ""  # "stay silent": no suggestion
    fmt = ((body.get("output_config") or {}).get("format")) or {}
    if fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), dict):
        return json.dumps(fill_schema(fmt["schema"]))
    sys_t = system_text(body).lower()
    if "json" in sys_t:
        if "title" in sys_t:
            return json.dumps({"title": "Fake session"})
        if "topic" in sys_t:
            return json.dumps({"isNewTopic": False, "title": None})
        return "{}"
    return "ok"


def plan_reply(body: dict) -> dict:
    """Decide the reply: {"error": (code, msg)} | {"text": s} | {"tool": (name, input)}, plus "script"."""
    messages = body.get("messages") or []
    prompt = last_prompt_text(messages)
    script = parse_directives(prompt)
    if is_side_request(body, prompt):
        return {"text": side_reply(body, prompt), "script": plain_script(), "prompt": prompt, "side": True}

    # Claude Code may append role "system" messages (environment notes) after
    # the user turn: the conversation's state is its last user/assistant message.
    convo = [m for m in messages if m.get("role") in ("user", "assistant")]
    last = convo[-1] if convo else {}
    results = _tool_results(last) if last.get("role") == "user" else []
    if results:
        # Follow-up step: the tool ran (or was rejected). Summarise and end the turn.
        res = results[-1]
        raw = _result_text(res)
        tu = _find_tool_use(messages, res.get("tool_use_id", "")) or {}
        name = tu.get("name", "tool")
        inp = tu.get("input") or {}
        # Keep [sleep]/[tokens] of the turn's prompt out of the follow-up.
        plain = plain_script(script["tokens"])
        if res.get("is_error"):
            return {"text": f"{name} failed: {raw}", "script": plain, "prompt": prompt}
        if name == WRITE_TOOL:
            shown = scripted_write_path(script) or inp.get("file_path", "?")
            return {"text": f"wrote {shown}", "script": plain, "prompt": prompt}
        if name == SHELL_TOOL:
            return {"text": raw if raw.strip() else "(no output)", "script": plain, "prompt": prompt}
        return {"text": f"{name} finished: {raw}", "script": plain, "prompt": prompt}

    write, run = file_and_command_tools(WRITE_TOOL, SHELL_TOOL, lambda: find_workdir(body))
    return {"script": script, "prompt": prompt, **scripted_reply(script, prompt, write, run)}


def _estimate_input_tokens(body: dict) -> int:
    return max(1, len(json.dumps(body.get("messages") or [])) // 4 + len(system_text(body)) // 4)


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def error_body(code: int, message: str) -> dict:
    return {"type": "error", "error": {"type": _ERROR_TYPES.get(code, "api_error"), "message": message}}


# --------------------------------------------------------------------------- HTTP


class Handler(FakeHandler):
    server_version = "fake-anthropic/1.0"
    request_id_header = "request-id"
    sse_content_type = "text/event-stream; charset=utf-8"
    logged_headers = {"anthropic_beta": "anthropic-beta"}
    error_body = staticmethod(error_body)

    # -- routes
    def do_GET(self):
        path = self._route()
        self._record()
        if path.endswith("/v1/models"):
            data = [
                {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
                for m in MODELS
            ]
            self._send_json(200, {"data": data, "has_more": False, "first_id": MODELS[0], "last_id": MODELS[-1]})
        elif "/v1/models/" in path:
            m = path.rsplit("/", 1)[1]
            self._send_json(200, {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"})
        else:
            self._no_route()

    do_HEAD = FakeHandler.head_ok

    def do_POST(self):
        path = self._route()
        body = self._json_body()
        if body is None:
            return
        if path.endswith("/v1/messages/count_tokens"):
            n = _estimate_input_tokens(body)
            self._record(input_tokens=n, body=body)
            self._send_json(200, {"input_tokens": n})
            return
        if not path.endswith("/v1/messages"):
            self._record(body=body)
            self._no_route()
            return

        plan = plan_reply(body)
        script = plan.pop("script")
        model = body.get("model") or MODELS[0]
        tools = [t.get("name") for t in body.get("tools") or []]
        n = self._begin_turn(plan, body, tools, model=model, stream=bool(body.get("stream")))
        if n is None:
            return
        mid = f"msg_fake_{n:04d}_{uuid.uuid4().hex[:8]}"

        in_tok, out_tok = token_counts(
            script, _estimate_input_tokens(body), plan.get("text") or json.dumps(plan.get("tool", ("", {}))[1])
        )
        tool = None
        if "tool" in plan:
            name, inp = plan["tool"]
            tool = {"type": "tool_use", "id": f"toolu_fake{uuid.uuid4().hex[:20]}", "name": name, "input": inp}
        stop_reason = "tool_use" if tool else "end_turn"
        usage = {
            "input_tokens": in_tok,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": out_tok,
        }

        if not body.get("stream"):
            content = []
            if plan.get("text"):
                content.append({"type": "text", "text": plan["text"]})
            if tool:
                content.append(tool)
            self._send_json(
                200,
                {
                    "id": mid,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": content,
                    "stop_reason": stop_reason,
                    "stop_sequence": None,
                    "usage": usage,
                },
            )
            return

        self._stream(mid, model, plan.get("text"), tool, usage, stop_reason, script["sleep"])

    def _stream(self, mid, model, text, tool, usage, stop_reason, sleep_s) -> None:
        def event(name: str, data: dict) -> bytes:
            return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()

        # Build the event list; the deltas are what [sleep] spreads over time.
        events: list[tuple[bool, bytes]] = []  # (is_delta, payload)
        start_usage = dict(usage, output_tokens=1)
        events.append((False, event("message_start", {
            "type": "message_start",
            "message": {
                "id": mid, "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": None, "stop_sequence": None, "usage": start_usage,
            },
        })))
        index = 0
        if text:
            events.append((False, event("content_block_start", {
                "type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""},
            })))
            for p in stream_pieces(text, sleep_s):
                events.append((True, event("content_block_delta", {
                    "type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": p},
                })))
            events.append((False, event("content_block_stop", {"type": "content_block_stop", "index": index})))
            index += 1
        if tool:
            events.append((False, event("content_block_start", {
                "type": "content_block_start", "index": index,
                "content_block": {"type": "tool_use", "id": tool["id"], "name": tool["name"], "input": {}},
            })))
            args = json.dumps(tool["input"])
            half = len(args) // 2
            for p in (args[:half], args[half:]):
                events.append((True, event("content_block_delta", {
                    "type": "content_block_delta", "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": p},
                })))
            events.append((False, event("content_block_stop", {"type": "content_block_stop", "index": index})))
        events.append((False, event("message_delta", {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": usage["output_tokens"], "input_tokens": usage["input_tokens"],
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
        })))
        events.append((False, event("message_stop", {"type": "message_stop"})))

        self._send_events(events, sleep_s, mid)


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    return serve(Handler, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
