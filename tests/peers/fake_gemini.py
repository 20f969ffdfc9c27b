#!/usr/bin/env python3
"""A scripted fake of the Gemini API (generativelanguage v1beta) for omk's end-to-end tests.

Standard library only; the twin of fake_llm.py / fake_anthropic.py (same CLI,
same directives, both from fake_common.py) for agents that speak Google's
Gemini dialect (Gemini CLI, ``gemini --acp``, pointed here with
GOOGLE_GEMINI_BASE_URL). Serves on 127.0.0.1 only:

    POST /v1beta/models/M:streamGenerateContent?alt=sse -> SSE, one JSON
                                           GenerateContentResponse per event
    POST /v1beta/models/M:generateContent  -> one GenerateContentResponse (JSON)
    POST /v1beta/models/M:countTokens      -> {"totalTokens": n}
    POST /v1beta/models/M:embedContent     -> a small embedding
    GET  /v1beta/models[/M]                -> a few Gemini model ids
    anything else                          -> 404 with a Google error body, at once

Usage:  python3 fake_gemini.py --port 0 [--log requests.jsonl]
The first stdout line is ``PORT <n>`` (flushed). SIGTERM/SIGINT shut it down cleanly.

Replies are scripted by directives in the text of the LAST user turn (its
last text part that is not context Gemini CLI injected, such as the
``<session_context>`` block); the last reply directive wins:

    (none)                 text "Done: <prompt excerpt>"
    [answer:TEXT]          text TEXT
    [write:PATH:CONTENT]   functionCall write_file {"file_path": ABS, "content":
                           CONTENT} (ABS = PATH made absolute against the
                           working directory Gemini CLI names in its context);
                           after the functionResponse: "wrote PATH"
                           (or "write_file failed: <error>")
    [run:CMD]              functionCall run_shell_command {"command": CMD,
                           "description": ...}; after the functionResponse: its
                           output (or "run_shell_command failed: <error>")
    [http-error:CODE]      HTTP status CODE with a Google-style error body
                           (use 4xx other than 429: Gemini CLI retries 5xx and 429)
    [json-plan:A|B|C]      text ["A","B","C"]
Modifiers, combined with the reply:
    [sleep:SECS]           stream the reply slowly over SECS seconds (cancel tests)
    [tokens:IN:OUT]        report promptTokenCount=IN, candidatesTokenCount=OUT

Gemini CLI also makes side requests of its own (generateContent with a JSON
response schema: model routing, next-speaker check, loop detection, session
titles, ...; or with no tools at all). Those never run a directive, so a
[sleep] prompt does not also stall them: a request with a response schema gets
a minimal object matching it (strings "ok", a title "Fake session"), a
next-speaker check {"next_speaker": "user"}, anything else "ok".

Without [tokens], usage is estimated as characters / 4. Every request is
logged as one JSON line (with the full body) when --log is given.
"""

from __future__ import annotations

import json
import re
import sys
import uuid

from fake_common import (DIRECTIVE_RE, FakeHandler, file_and_command_tools, fill_schema, parse_directives, plain_script,
                         scripted_reply, scripted_write_path, serve, stream_pieces, token_counts)

MODELS = ["gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-3-pro-preview",
          "gemini-3-flash-preview"]
# Where Gemini CLI states the directory it works in (its first-turn context and system prompt).
WORKDIR_RES = [
    re.compile(r"I'm currently working in the directory:\s*(/[^\s<>\"'`]*)"),
    re.compile(r"(?:Current working directory|Working directory|working directory|cwd)\s*[:=]\s*`?(/[^\s<>\"'`]*)"),
    re.compile(r"<workspace_directories>\s*(?:-\s*)?(/[^\s<>\"'`]*)"),
    re.compile(r"(?:Workspace Directories|workspace directories)[^\n]*\n\s*(?:-\s*)?(/[^\s<>\"'`]*)"),
]
WRITE_TOOL = "write_file"
SHELL_TOOL = "run_shell_command"
SERVED_ROUTE_RE = re.compile(r"/models/([^/:]+):(streamGenerateContent|generateContent|countTokens|embedContent|batchEmbedContents)$")


# --------------------------------------------------------------------------- scripting


def _text_parts(content) -> list[str]:
    if not isinstance(content, dict):
        return []
    out = []
    for part in content.get("parts") or []:
        if isinstance(part, dict) and isinstance(part.get("text"), str) and not part.get("thought"):
            out.append(part["text"])
    return out


def _is_injected(text: str) -> bool:
    """Context blocks Gemini CLI adds on its own are not the prompt."""
    t = text.lstrip()
    if DIRECTIVE_RE.search(t):
        return False
    return (
        t.startswith("<session_context>")
        or t.startswith("<system")
        or t.startswith("This is the Gemini CLI")
        or t.startswith("--- Content from referenced files")
        or t.startswith("<")
    )


def _function_responses(content: dict) -> list[dict]:
    if not isinstance(content, dict):
        return []
    return [p["functionResponse"] for p in content.get("parts") or []
            if isinstance(p, dict) and isinstance(p.get("functionResponse"), dict)]


def last_prompt_text(contents: list) -> str:
    """The last human text of the conversation (skipping functionResponse-only user turns)."""
    for c in reversed(contents):
        if c.get("role", "user") == "user":
            parts = [p for p in _text_parts(c) if not _is_injected(p)]
            if parts:
                return parts[-1]
            if not _function_responses(c) and _text_parts(c):
                return ""
    return ""


def system_text(body: dict) -> str:
    si = body.get("systemInstruction") or body.get("system_instruction")
    if isinstance(si, str):
        return si
    return "\n".join(_text_parts(si)) if isinstance(si, dict) else ""


def find_workdir(body: dict) -> str | None:
    texts = []
    for c in body.get("contents") or []:
        texts.extend(_text_parts(c))
    texts.append(system_text(body))
    for t in texts:
        for rx in WORKDIR_RES:
            m = rx.search(t)
            if m:
                return m.group(1).rstrip(".,;:")
    return None


def offered_tools(body: dict) -> list[str]:
    names = []
    for t in body.get("tools") or []:
        for fd in (t or {}).get("functionDeclarations") or (t or {}).get("function_declarations") or []:
            if isinstance(fd, dict) and fd.get("name"):
                names.append(fd["name"])
    return names


def _find_function_call(contents: list, name: str, call_id: str | None):
    for c in reversed(contents):
        if c.get("role") == "model":
            for p in reversed(c.get("parts") or []):
                fc = p.get("functionCall") if isinstance(p, dict) else None
                if isinstance(fc, dict) and fc.get("name") == name and (not call_id or fc.get("id") in (None, call_id)):
                    return fc
    return None


def _response_text(fr: dict) -> tuple[str, bool]:
    """(text, is_error) of a functionResponse as Gemini CLI sends it."""
    resp = fr.get("response")
    if isinstance(resp, dict):
        if "error" in resp:
            err = resp["error"]
            return (err if isinstance(err, str) else json.dumps(err)), True
        out = resp.get("output", resp.get("result", resp.get("content")))
        if out is None:
            out = json.dumps(resp)
        return (out if isinstance(out, str) else json.dumps(out)), False
    return (resp if isinstance(resp, str) else json.dumps(resp)), False


def _schema_type(schema: dict):
    """Gemini's schemas may spell a type in capitals ("OBJECT") and leave an object's out."""
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if str(x).lower() != "null"), "null")
    t = str(t).lower() if t else t
    return "object" if t is None and "properties" in schema else t


def _schema_number(schema: dict):
    # 1 rather than 0: Gemini CLI's router wants a complexity_score in 1..100.
    if "minimum" in schema:
        return schema["minimum"]
    if "exclusiveMinimum" in schema:
        return schema["exclusiveMinimum"] + 1
    return 1


def _fill_schema(schema: dict):
    """A minimal value matching a response schema; a next-speaker check gets "user"."""
    return fill_schema(schema, type_of=_schema_type, number=_schema_number, fixed={"next_speaker": "user"})


def response_schema(body: dict):
    gc = body.get("generationConfig") or body.get("generation_config") or {}
    for k in ("responseJsonSchema", "responseSchema", "response_json_schema", "response_schema"):
        if isinstance(gc.get(k), dict):
            return gc[k]
    return None


def is_side_request(body: dict, method: str) -> bool:
    """The main chat streams with the tools offered; everything else is Gemini CLI's own business."""
    return method != "streamGenerateContent" or response_schema(body) is not None or not offered_tools(body)


def side_reply(body: dict) -> str:
    schema = response_schema(body)
    if schema is not None:
        return json.dumps(_fill_schema(schema))
    gc = body.get("generationConfig") or {}
    if gc.get("responseMimeType") == "application/json":
        return "{}"
    return "ok"


def plan_reply(body: dict, method: str) -> dict:
    """Decide the reply: {"error": (code, msg)} | {"text": s} | {"tool": (name, args)}, plus "script"."""
    contents = body.get("contents") or []
    prompt = last_prompt_text(contents)
    script = parse_directives(prompt)
    if is_side_request(body, method):
        return {"text": side_reply(body), "script": plain_script(), "prompt": prompt, "side": True}

    last = contents[-1] if contents else {}
    results = _function_responses(last) if last.get("role", "user") == "user" else []
    if results:
        # Follow-up step: the tool ran (or was rejected). Summarise and end the turn.
        fr = results[-1]
        name = fr.get("name", "tool")
        raw, is_error = _response_text(fr)
        fc = _find_function_call(contents, name, fr.get("id")) or {}
        args = fc.get("args") or {}
        plain = plain_script(script["tokens"])
        if is_error or raw.lstrip().lower().startswith(("error", "tool execution denied", "user rejected")):
            return {"text": f"{name} failed: {raw}", "script": plain, "prompt": prompt}
        if name == WRITE_TOOL:
            shown = scripted_write_path(script) or args.get("file_path", "?")
            return {"text": f"wrote {shown}", "script": plain, "prompt": prompt}
        if name == SHELL_TOOL:
            out = raw
            m = re.search(r"Output:\s?(.*?)(?:\n(?:Error|Exit Code|Signal|Background PIDs|Process Group PGID):|\Z)", raw, re.S)
            if m:
                out = m.group(1).strip("\n")
            return {"text": out if out.strip() and out.strip() != "(empty)" else "(no output)",
                    "script": plain, "prompt": prompt}
        return {"text": f"{name} finished: {raw}", "script": plain, "prompt": prompt}

    write, run = file_and_command_tools(WRITE_TOOL, SHELL_TOOL, lambda: find_workdir(body))
    return {"script": script, "prompt": prompt, **scripted_reply(script, prompt, write, run)}


def _estimate_input_tokens(body: dict) -> int:
    return max(1, len(json.dumps(body.get("contents") or [])) // 4 + len(system_text(body)) // 4)


_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
           409: "ABORTED", 413: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
           503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


def error_body(code: int, message: str) -> dict:
    return {"error": {"code": code, "message": message, "status": _STATUS.get(code, "UNKNOWN")}}


def model_obj(m: str) -> dict:
    return {
        "name": f"models/{m}", "baseModelId": m, "version": "001", "displayName": m,
        "description": "fake", "inputTokenLimit": 1048576, "outputTokenLimit": 65536,
        "supportedGenerationMethods": ["generateContent", "countTokens", "streamGenerateContent"],
    }


# --------------------------------------------------------------------------- HTTP


class Handler(FakeHandler):
    server_version = "fake-gemini/1.0"
    json_content_type = "application/json; charset=UTF-8"
    logged_headers = {"api_client": "x-goog-api-client"}
    error_body = staticmethod(error_body)

    # -- routes
    def do_GET(self):
        path = self._route()
        self._record()
        if path.endswith("/models"):
            self._send_json(200, {"models": [model_obj(m) for m in MODELS]})
        elif re.search(r"/models/[^/:]+$", path):
            self._send_json(200, model_obj(path.rsplit("/", 1)[1]))
        else:
            self._no_route()

    do_HEAD = FakeHandler.head_ok

    def do_POST(self):
        path = self._route()
        body = self._json_body()
        if body is None:
            return
        m = SERVED_ROUTE_RE.search(path)
        if not m:
            self._record(body=body)
            self._no_route()
            return
        model, method = m.group(1), m.group(2)
        if method == "countTokens":
            inner = body.get("generateContentRequest") or body
            n = _estimate_input_tokens(inner)
            self._record(model=model, total_tokens=n, body=body)
            self._send_json(200, {"totalTokens": n})
            return
        if method in ("embedContent", "batchEmbedContents"):
            self._record(model=model, body=body)
            emb = {"values": [0.0] * 8}
            if method == "embedContent":
                self._send_json(200, {"embedding": emb})
            else:
                self._send_json(200, {"embeddings": [emb for _ in body.get("requests") or [None]]})
            return

        plan = plan_reply(body, method)
        script = plan.pop("script")
        n = self._begin_turn(plan, body, offered_tools(body), model=model, rpc=method)
        if n is None:
            return
        rid = f"fake-{n:04d}-{uuid.uuid4().hex[:8]}"

        in_tok, out_tok = token_counts(
            script, _estimate_input_tokens(body), plan.get("text") or json.dumps(plan.get("tool", ("", {}))[1])
        )
        usage = {"promptTokenCount": in_tok, "candidatesTokenCount": out_tok, "totalTokenCount": in_tok + out_tok}
        fcall = None
        if "tool" in plan:
            name, args = plan["tool"]
            fcall = {"name": name, "args": args}

        if method == "generateContent":
            parts = []
            if plan.get("text") is not None:
                parts.append({"text": plan["text"]})
            if fcall:
                parts.append({"functionCall": fcall})
            self._send_json(200, self._response(parts, "STOP", usage, model, rid))
            return
        self._stream(plan.get("text"), fcall, usage, model, rid, script["sleep"])

    @staticmethod
    def _response(parts, finish, usage, model, rid) -> dict:
        cand = {"content": {"role": "model", "parts": parts}, "index": 0}
        if finish:
            cand["finishReason"] = finish
        obj = {"candidates": [cand], "modelVersion": model, "responseId": rid}
        if usage:
            obj["usageMetadata"] = usage
        return obj

    def _stream(self, text, fcall, usage, model, rid, sleep_s) -> None:
        chunks: list[dict] = []  # each a GenerateContentResponse
        if text:
            for p in stream_pieces(text, sleep_s):
                chunks.append(self._response([{"text": p}], None, None, model, rid))
        if fcall:
            chunks.append(self._response([{"functionCall": fcall}], None, None, model, rid))
        if not chunks:
            chunks.append(self._response([{"text": ""}], None, None, model, rid))
        # The last chunk carries finishReason and the usage (as the real API does).
        last = chunks[-1]
        last["candidates"][0]["finishReason"] = "STOP"
        last["usageMetadata"] = usage
        self._send_events([(True, b"data: " + json.dumps(c).encode() + b"\r\n\r\n") for c in chunks], sleep_s, rid)


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    return serve(Handler, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
