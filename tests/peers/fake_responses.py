#!/usr/bin/env python3
"""A scripted fake of the OpenAI Responses API for omk's end-to-end tests.

Standard library only; the twin of fake_llm.py and fake_anthropic.py (same
CLI, same directives, both from fake_common.py) for agents that speak the
Responses dialect: Codex (`codex app-server`, driven through the ACP adapter
@agentclientprotocol/codex-acp), pointed at it by a model provider in
``$CODEX_HOME/config.toml`` with ``wire_api = "responses"``. Serves on
127.0.0.1 only:

    POST /v1/responses      -> SSE when "stream": true (what Codex uses), JSON otherwise
    GET  /v1/models[/ID]    -> a few model ids (OpenAI list format)
    anything else           -> 404 with an OpenAI error body, at once
                               (e.g. /v1/responses/compact, /v1/memories/...)

Usage:  python3 fake_responses.py --port 0 [--log requests.jsonl]
The first stdout line is ``PORT <n>`` (flushed). SIGTERM/SIGINT shut it down cleanly.

Replies are scripted by directives in the text of the LAST user message of
``input`` (its last input_text part that is not context Codex injected on its
own: ``<environment_context>``, ``# AGENTS.md instructions``, ``<turn_aborted>``
and the like); the last reply directive wins:

    (none)                 text "Done: <prompt excerpt>"
    [answer:TEXT]          text TEXT
    [write:PATH:CONTENT]   a call of the apply_patch tool offered in "tools"
                           (freeform/custom: "input" is the patch; function:
                           {"input": patch}) adding PATH with CONTENT
                           (``*** Add File: PATH``, PATH kept as written: Codex
                           resolves it against its cwd); after the tool output:
                           "wrote PATH" (or "apply_patch failed: <output>")
    [run:CMD]              a call of the shell tool offered in "tools"
                           (exec_command {"cmd"}, shell_command {"command": str}
                           or shell {"command": ["bash", "-lc", CMD]}); after the
                           tool output: the command's output (or "<tool> failed: ...")
    [http-error:CODE]      HTTP status CODE with an OpenAI-style error body
                           (use 4xx: Codex retries 5xx and 429)
    [json-plan:A|B|C]      text ["A","B","C"]
Modifiers, combined with the reply:
    [sleep:SECS]           stream the reply slowly over SECS seconds (cancel tests)
    [tokens:IN:OUT]        report input_tokens=IN, output_tokens=OUT

Requests that offer no tools, or ask for structured output ("text.format" of
type json_schema; e.g. an approval reviewer or a title generator), never run a
directive: they get a minimal object matching the schema, else "ok".

Without [tokens], usage is estimated as characters / 4 (the request's
instructions and input for input_tokens, the reply for output_tokens).
Every request is logged as one JSON line (with the full body) when --log is given.
"""

from __future__ import annotations

import functools
import json
import re
import sys
import time
import uuid

from fake_common import (DIRECTIVE_RE, FakeHandler, fill_schema, parse_directives, plain_script, scripted_reply,
                         scripted_write_path, serve, stream_pieces, text_parts, token_counts)

MODELS = ["fake-model", "gpt-5-codex", "gpt-5"]
PATCH_TOOL = "apply_patch"
SHELL_TOOLS = ("exec_command", "shell_command", "shell", "local_shell")
OUTPUT_TYPES = {"function_call_output", "custom_tool_call_output", "local_shell_call_output"}
CALL_TYPES = {"function_call", "custom_tool_call", "local_shell_call"}
INJECTED_PREFIXES = (
    "<environment_context",
    "<user_instructions",
    "# AGENTS.md instructions",
    "<turn_aborted",
    "<user_shell_command",
    "<permissions instructions",
    "<collaboration_mode",
    "<skills_instructions",
    "<INSTRUCTIONS>",
)


# --------------------------------------------------------------------------- scripting


def _text_parts(content) -> list[str]:
    return text_parts(content, ("input_text", "output_text", "text"))


def _is_injected(text: str) -> bool:
    t = text.lstrip()
    return t.startswith(INJECTED_PREFIXES) or (t.startswith("<") and not DIRECTIVE_RE.search(t))


def _input_items(body: dict) -> list[dict]:
    items = body.get("input")
    if isinstance(items, str):
        return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": items}]}]
    return [i for i in items or [] if isinstance(i, dict)]


def _is_message(item: dict, role: str) -> bool:
    return item.get("role") == role and item.get("type", "message") == "message"


def last_prompt(items: list[dict]) -> tuple[str, int]:
    """The last human text of the input and the index of its message (-1 if none)."""
    for idx in range(len(items) - 1, -1, -1):
        item = items[idx]
        if _is_message(item, "user"):
            parts = [p for p in _text_parts(item.get("content")) if not _is_injected(p)]
            if parts:
                return parts[-1], idx
    return "", -1


def _tool_name(tool: dict) -> str | None:
    if tool.get("type") == "local_shell":
        return "local_shell"
    return tool.get("name") or (tool.get("function") or {}).get("name")


def offered_tools(body: dict) -> dict[str, dict]:
    out = {}
    for t in body.get("tools") or []:
        if isinstance(t, dict):
            name = _tool_name(t)
            if name:
                out[name] = t
    return out


def _output_schema(body: dict):
    fmt = ((body.get("text") or {}).get("format")) or {}
    if fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), dict):
        return fmt["schema"]
    return None


def _output_text(output) -> str:
    """The text of a tool output item's "output" (a string, a content list or an object)."""
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return "".join(_text_parts(output))
    if isinstance(output, dict):
        if isinstance(output.get("content"), str):
            return output["content"]
        return json.dumps(output)
    return "" if output is None else str(output)


_EXEC_OUTPUT_RE = re.compile(r"\nOutput:\n(.*)\Z", re.S)
_EXIT_RE = re.compile(r"(?:Process exited with code|Exit code:)\s*(-?\d+)")


def shell_output(raw: str) -> tuple[str, int | None]:
    """The command output and exit code out of what a Codex shell tool returned."""
    text, code = raw, None
    try:
        obj = json.loads(raw)
        if isinstance(obj, dict) and "output" in obj:
            text = str(obj.get("output") or "")
            code = (obj.get("metadata") or {}).get("exit_code")
            return text, code
    except ValueError:
        pass
    m = _EXIT_RE.search(raw)
    if m:
        code = int(m.group(1))
    m = _EXEC_OUTPUT_RE.search(raw)
    if m:
        text = m.group(1)
    return text, code


def make_patch(path: str, content: str) -> str:
    lines = content.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    body = "".join(f"+{line}\n" for line in lines)
    return f"*** Begin Patch\n*** Add File: {path}\n{body}*** End Patch\n"


def shell_call(tools: dict[str, dict], cmd: str) -> tuple[str, str, object]:
    """(kind, name, arguments) of a call running cmd with the shell tool on offer."""
    if "exec_command" in tools:
        return "function_call", "exec_command", {"cmd": cmd}
    if "shell_command" in tools:
        return "function_call", "shell_command", {"command": cmd}
    if "shell" in tools:
        return "function_call", "shell", {"command": ["bash", "-lc", cmd]}
    if "local_shell" in tools:
        return "local_shell_call", "local_shell", {"type": "exec", "command": ["bash", "-lc", cmd]}
    return "function_call", "shell_command", {"command": cmd}


def patch_call(tools: dict[str, dict], path: str, content: str) -> tuple[str, str, object]:
    patch = make_patch(path, content)
    tool = tools.get(PATCH_TOOL)
    if tool is not None and tool.get("type") == "function":
        return "function_call", PATCH_TOOL, {"input": patch}
    if tool is not None:
        return "custom_tool_call", PATCH_TOOL, patch
    # No apply_patch tool offered: Codex also accepts `apply_patch` run through its shell tool.
    kind, name, args = shell_call(tools, "apply_patch <<'EOF'\n" + patch + "EOF\n")
    return kind, name, args


def plan_reply(body: dict) -> dict:
    """Decide the reply: {"error": (code, msg)} | {"text": s} | {"tool": (kind, name, args)}, plus "script"."""
    items = _input_items(body)
    prompt, p_idx = last_prompt(items)
    script = parse_directives(prompt)
    tools = offered_tools(body)
    schema = _output_schema(body)
    if schema is not None or not tools:
        text = json.dumps(fill_schema(schema)) if schema is not None else "ok"
        return {"text": text, "script": plain_script(), "prompt": prompt, "side": True}

    after = items[p_idx + 1:] if p_idx >= 0 else items
    outputs = [i for i in after if i.get("type") in OUTPUT_TYPES]
    if outputs:
        # Follow-up step: the tool ran (or was rejected). Summarise and end the turn.
        out = outputs[-1]
        call = next((i for i in reversed(after) if i.get("type") in CALL_TYPES
                     and i.get("call_id") == out.get("call_id")), {})
        name = call.get("name") or ("local_shell" if call.get("type") == "local_shell_call" else "tool")
        raw = _output_text(out.get("output"))
        # Keep [sleep] of the turn's prompt out of the follow-up.
        plain = plain_script(script["tokens"])
        path = scripted_write_path(script)
        if path is not None:
            text, code = shell_output(raw)
            failed = code not in (None, 0) or not text.lstrip().startswith("Success")
            if failed or re.search(r"(?i)\b(rejected|declined|denied|aborted)\b", raw):
                return {"text": f"{name} failed: {raw}", "script": plain, "prompt": prompt}
            return {"text": f"wrote {path}", "script": plain, "prompt": prompt}
        text, code = shell_output(raw)
        if code not in (None, 0) or re.search(r"(?i)\b(rejected|declined|denied)\b", raw) and not text.strip():
            return {"text": f"{name} failed: {raw}", "script": plain, "prompt": prompt}
        return {"text": text if text.strip() else "(no output)", "script": plain, "prompt": prompt}

    write, run = functools.partial(patch_call, tools), functools.partial(shell_call, tools)
    return {"script": script, "prompt": prompt, **scripted_reply(script, prompt, write, run)}


def _estimate_input_tokens(body: dict) -> int:
    return max(1, len(json.dumps(body.get("input") or [])) // 4 + len(str(body.get("instructions") or "")) // 4)


_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


def error_body(code: int, message: str) -> dict:
    typ, ecode = _ERROR_TYPES.get(code, ("server_error", None))
    return {"error": {"message": message, "type": typ, "param": None, "code": ecode}}


def output_items(plan: dict) -> list[dict]:
    """The finished output items of the reply (a message and/or one tool call)."""
    items = []
    if plan.get("text") is not None and "tool" not in plan:
        items.append({
            "type": "message", "id": f"msg_fake{uuid.uuid4().hex[:20]}", "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": plan["text"], "annotations": []}],
        })
    if "tool" in plan:
        kind, name, args = plan["tool"]
        call_id = f"call_fake{uuid.uuid4().hex[:20]}"
        if kind == "custom_tool_call":
            items.append({"type": "custom_tool_call", "id": f"ctc_fake{uuid.uuid4().hex[:16]}",
                          "status": "completed", "call_id": call_id, "name": name, "input": args})
        elif kind == "local_shell_call":
            items.append({"type": "local_shell_call", "id": f"lsh_fake{uuid.uuid4().hex[:16]}",
                          "status": "completed", "call_id": call_id, "action": args})
        else:
            items.append({"type": "function_call", "id": f"fc_fake{uuid.uuid4().hex[:16]}",
                          "status": "completed", "call_id": call_id, "name": name,
                          "arguments": json.dumps(args)})
    return items


# --------------------------------------------------------------------------- HTTP


class Handler(FakeHandler):
    server_version = "fake-responses/1.0"
    request_id_header = "x-request-id"
    sse_content_type = "text/event-stream; charset=utf-8"
    logged_headers = {"originator": "originator"}
    error_body = staticmethod(error_body)

    def _read_body(self):
        body = super()._read_body()
        if self.headers.get("Content-Encoding", "").lower() == "zstd":
            return None  # not decodable with the standard library; Codex sends plain JSON to API keys
        return body

    # -- routes
    def do_GET(self):
        path = self._route()
        self._record()
        if path.endswith("/v1/models"):
            data = [{"id": m, "object": "model", "created": 1735689600, "owned_by": "fake"} for m in MODELS]
            self._send_json(200, {"object": "list", "data": data})
        elif "/v1/models/" in path:
            m = path.rsplit("/", 1)[1]
            self._send_json(200, {"id": m, "object": "model", "created": 1735689600, "owned_by": "fake"})
        else:
            self._no_route()

    do_HEAD = FakeHandler.head_ok

    def do_POST(self):
        path = self._route()
        body = self._json_body(content_encoding=self.headers.get("Content-Encoding"))
        if body is None:
            return
        if not path.endswith("/v1/responses"):
            self._record(body=body)
            self._no_route()
            return

        plan = plan_reply(body)
        script = plan.pop("script")
        model = body.get("model") or MODELS[0]
        tools = [_tool_name(t) for t in body.get("tools") or [] if isinstance(t, dict)]
        n = self._begin_turn(plan, body, tools, model=model, stream=bool(body.get("stream")))
        if n is None:
            return
        rid = f"resp_fake_{n:04d}_{uuid.uuid4().hex[:8]}"

        items = output_items(plan)
        in_tok, out_tok = token_counts(
            script,
            _estimate_input_tokens(body),
            plan.get("text") if "tool" not in plan else json.dumps(plan["tool"][2]),
        )
        usage = {
            "input_tokens": in_tok,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": out_tok,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": in_tok + out_tok,
        }
        response = {
            "id": rid, "object": "response", "created_at": int(time.time()), "status": "completed",
            "model": model, "output": items, "usage": usage, "error": None, "incomplete_details": None,
        }
        if not body.get("stream"):
            self._send_json(200, response)
            return
        self._stream(response, script["sleep"])

    def _stream(self, response: dict, sleep_s) -> None:
        seq = iter(range(1_000_000))

        def event(data: dict) -> bytes:
            data = {"type": data.pop("type"), "sequence_number": next(seq), **data}
            return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()

        base = {k: v for k, v in response.items() if k not in ("output", "usage")}
        events: list[tuple[bool, bytes]] = []  # (is_delta, payload)
        events.append((False, event({"type": "response.created",
                                     "response": dict(base, status="in_progress", output=[], usage=None)})))
        events.append((False, event({"type": "response.in_progress",
                                     "response": dict(base, status="in_progress", output=[], usage=None)})))
        for idx, item in enumerate(response["output"]):
            if item["type"] == "message":
                text = item["content"][0]["text"]
                events.append((False, event({"type": "response.output_item.added", "output_index": idx,
                                             "item": dict(item, status="in_progress", content=[])})))
                events.append((False, event({"type": "response.content_part.added", "item_id": item["id"],
                                             "output_index": idx, "content_index": 0,
                                             "part": {"type": "output_text", "text": "", "annotations": []}})))
                for p in stream_pieces(text, sleep_s):
                    events.append((True, event({"type": "response.output_text.delta", "item_id": item["id"],
                                                "output_index": idx, "content_index": 0, "delta": p})))
                events.append((False, event({"type": "response.output_text.done", "item_id": item["id"],
                                             "output_index": idx, "content_index": 0, "text": text})))
                events.append((False, event({"type": "response.content_part.done", "item_id": item["id"],
                                             "output_index": idx, "content_index": 0,
                                             "part": item["content"][0]})))
            else:
                added = dict(item, status="in_progress")
                if "arguments" in added:
                    added["arguments"] = ""
                if "input" in added:
                    added["input"] = ""
                events.append((False, event({"type": "response.output_item.added", "output_index": idx,
                                             "item": added})))
                if item["type"] == "function_call":
                    args = item["arguments"]
                    half = len(args) // 2
                    for p in (args[:half], args[half:]):
                        events.append((True, event({"type": "response.function_call_arguments.delta",
                                                    "item_id": item["id"], "output_index": idx, "delta": p})))
                    events.append((False, event({"type": "response.function_call_arguments.done",
                                                 "item_id": item["id"], "output_index": idx, "arguments": args})))
                elif item["type"] == "custom_tool_call":
                    inp = item["input"]
                    half = len(inp) // 2
                    for p in (inp[:half], inp[half:]):
                        events.append((True, event({"type": "response.custom_tool_call_input.delta",
                                                    "item_id": item["id"], "output_index": idx, "delta": p})))
                    events.append((False, event({"type": "response.custom_tool_call_input.done",
                                                 "item_id": item["id"], "output_index": idx, "input": inp})))
            events.append((False, event({"type": "response.output_item.done", "output_index": idx, "item": item})))
        events.append((False, event({"type": "response.completed", "response": response})))

        self._send_events(events, sleep_s, response["id"])


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    return serve(Handler, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
