"""Fake cloud APIs for tests: local HTTP servers in the shape of OpenAI's chat completions
and Anthropic's Messages API, since the real ones are out of reach (and cost money).

Each fake records every request it gets (`received`), checks the credentials and the
request's shape the way the real API does (a bad one gets the same kind of 4xx), and plays
a tiny scripted model: given tools, it first calls the first tool with `tool_input`; once
the conversation holds that tool's result, it answers with text that quotes the result.
Answers are non-streamed JSON or SSE streams in the provider's own event format.
`fail_next()` queues error answers (529 overloaded, 500, ...); `break_stream` makes the
next stream end in an error event or a cut connection.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from nanobot_tui.engine.llm.results import ToolCall

TOOL_INPUT: dict[str, Any] = {"city": "Paris"}
PLAIN_ANSWER = "Hello from the fake."
TOOL_RESULT = "18 C and sunny"

# A conversation for the scripted model, in OpenAI's shape, as the agent loop sends it.
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
QUESTION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Weather in Paris?"},
]


def after_tool_call(call: ToolCall, text: str = "") -> list[dict[str, Any]]:
    """QUESTION, the model's turn with `call`, and the tool's TOOL_RESULT."""
    return [
        *QUESTION,
        {
            "role": "assistant",
            "content": text,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": TOOL_RESULT},
    ]


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: Any  # the decoded JSON


@dataclass
class Reply:
    status: int
    body: Any = None  # JSON for a plain answer
    events: list[str] | None = None  # SSE frames for a stream
    complete: bool = True  # False: the connection is cut after the events
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Script:
    """What the scripted model says to one request."""

    text: str
    tool: str | None = None  # the tool it calls, if any


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_POST(self) -> None:
        self._serve()

    def do_GET(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        headers = {k.lower(): v for k, v in self.headers.items()}
        reply = self.server.fake.answer(Received(self.command, self.path, headers, body))
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.events is None:
            data = json.dumps(reply.body).encode()
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for frame in reply.events:
            data = frame.encode()
            self.wfile.write(b"%X\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        if reply.complete:
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: _FakeCloud


class _FakeCloud:
    """A fake API on 127.0.0.1, a free port, in a thread; use it as a context manager."""

    default_model = ""

    def __init__(
        self, *, api_key: str | None, model: str | None = None, echo_key_in_errors: bool = False
    ) -> None:
        self.api_key = api_key
        self.model = model or self.default_model
        # A careless server that repeats the key it got in its error message: the worst
        # case for a client that must never show a key.
        self.echo_key_in_errors = echo_key_in_errors
        self.tool_input: dict[str, Any] = dict(TOOL_INPUT)
        self.received: list[Received] = []
        self.break_stream: Literal["error", "cut"] | None = None
        self._failures: list[Reply] = []
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )  # a short poll: shutdown() waits for it

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> _FakeCloud:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def fail_next(self, status: int, body: Any, times: int = 1, **headers: str) -> None:
        """Answer the next `times` requests with this error."""
        with self._lock:
            self._failures += [Reply(status, body, headers=headers)] * times

    def answer(self, request: Received) -> Reply:
        with self._lock:
            self.received.append(request)
            failure = self._failures.pop(0) if self._failures else None
        if failure is not None:
            return failure
        return self.reply(request)

    def reply(self, request: Received) -> Reply:
        raise NotImplementedError

    def script(self, tools: list[Any] | None, tool_names: list[str], results: list[str]) -> Script:
        """Call the first tool until its result is in; then quote the results."""
        if results:
            return Script("The tool said: " + " | ".join(results))
        if tool_names:
            return Script("Let me check.", tool=tool_names[0])
        return Script(PLAIN_ANSWER)


def _pieces(text: str, n: int = 3) -> Iterator[str]:
    """`text` in n roughly equal pieces, as a stream would send it."""
    size = max(1, -(-len(text) // n))
    for i in range(0, len(text), size):
        yield text[i : i + size]


def _tokens(value: Any) -> int:
    return max(1, len(json.dumps(value)) // 4)


# --------------------------------------------------------------------------- Anthropic


def _anthropic_error(status: int, kind: str, message: str) -> Reply:
    return Reply(status, {"type": "error", "error": {"type": kind, "message": message}})


def _sse(event: Mapping[str, Any]) -> str:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"


class FakeAnthropicServer(_FakeCloud):
    """A fake of Anthropic's `POST /v1/messages`."""

    default_model = "claude-fake-1"

    def reply(self, request: Received) -> Reply:
        if request.path != "/v1/messages" or request.method != "POST":
            return _anthropic_error(404, "not_found_error", f"Not found: {request.path}")
        key = request.headers.get("x-api-key")
        if key != self.api_key:
            said = f": {key}" if self.echo_key_in_errors else ""
            return _anthropic_error(401, "authentication_error", f"invalid x-api-key{said}")
        if request.headers.get("anthropic-version") != "2023-06-01":
            return _anthropic_error(400, "invalid_request_error", "anthropic-version: missing")
        problem = self._check(request.body)
        if problem:
            return _anthropic_error(400, "invalid_request_error", problem)
        body = request.body
        if body["model"] != self.model:
            return _anthropic_error(404, "not_found_error", f"model: {body['model']}")
        tools = body.get("tools") or []
        last = body["messages"][-1]["content"]
        blocks = last if isinstance(last, list) else []
        results = [_text_of(b.get("content")) for b in blocks if b["type"] == "tool_result"]
        names = (
            []
            if (body.get("tool_choice") or {}).get("type") == "none"
            else [t["name"] for t in tools]
        )
        script = self.script(tools, names, results)
        message = self._message(body, script)
        if body.get("stream"):
            return self._stream(message)
        return Reply(200, message)

    def _check(self, body: Any) -> str:
        """The request checks of the real API that a translation can get wrong."""
        if not isinstance(body, dict):
            return "body: expected a JSON object"
        for name in ("model", "max_tokens", "messages"):
            if name not in body:
                return f"{name}: Field required"
        if not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1:
            return "max_tokens: must be a positive integer"
        if "system" in body and not isinstance(body["system"], str | list):
            return "system: must be a string or a list of text blocks"
        if "temperature" in body and not 0 <= body["temperature"] <= 1:
            return "temperature: must be between 0 and 1"
        messages = body["messages"]
        if not messages:
            return "messages: at least one message is required"
        previous_uses: set[str] = set()
        for i, msg in enumerate(messages):
            role = msg.get("role")
            if role not in ("user", "assistant"):
                return f"messages.{i}.role: Input should be 'user' or 'assistant'"
            if i > 0 and role == messages[i - 1]["role"]:
                return "messages: roles must alternate between 'user' and 'assistant'"
            content = msg.get("content")
            if isinstance(content, str):
                blocks: list[dict[str, Any]] = [{"type": "text", "text": content}]
            else:
                blocks = content
            if not blocks:
                return f"messages.{i}: content must be non-empty"
            kinds = [b.get("type") for b in blocks]
            if "text" in kinds and any(not b.get("text") for b in blocks if b["type"] == "text"):
                return f"messages.{i}: text content blocks must be non-empty"
            answered = {b.get("tool_use_id") for b in blocks if b["type"] == "tool_result"}
            if previous_uses - answered:
                return (
                    f"messages.{i}: tool_use ids were found without tool_result blocks "
                    f"immediately after: {', '.join(sorted(previous_uses - answered))}"
                )
            if "tool_result" in kinds:
                if role != "user":
                    return f"messages.{i}: tool_result blocks belong in user messages"
                first_other = next((j for j, k in enumerate(kinds) if k != "tool_result"), None)
                if first_other is not None and "tool_result" in kinds[first_other:]:
                    return f"messages.{i}: tool_result blocks must come first"
                for b in blocks:
                    if b["type"] == "tool_result" and b.get("tool_use_id") not in previous_uses:
                        return (
                            f"messages.{i}: unexpected tool_use_id {b.get('tool_use_id')!r} "
                            "in tool_result blocks: each must answer a tool_use block "
                            "of the previous message"
                        )
            for b in blocks:
                if b["type"] == "tool_use" and not isinstance(b.get("input"), dict):
                    return f"messages.{i}: tool_use.input must be an object"
            if role == "user" and "tool_use" in kinds:
                return f"messages.{i}: tool_use blocks belong in assistant messages"
            previous_uses = {b["id"] for b in blocks if b["type"] == "tool_use"}
        for j, tool in enumerate(body.get("tools") or []):
            if set(tool) - {"name", "description", "input_schema"} or "input_schema" not in tool:
                return f"tools.{j}: expected name, description and input_schema"
        return ""

    def _message(self, body: dict[str, Any], script: Script) -> dict[str, Any]:
        content: list[dict[str, Any]] = [{"type": "text", "text": script.text}]
        if script.tool:
            content.append(
                {
                    "type": "tool_use",
                    "id": f"toolu_fake_{len(self.received)}",
                    "name": script.tool,
                    "input": self.tool_input,
                }
            )
        return {
            "id": f"msg_fake_{len(self.received)}",
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": "tool_use" if script.tool else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": _tokens(body["messages"]), "output_tokens": _tokens(content)},
        }

    def _stream(self, message: dict[str, Any]) -> Reply:
        start = {**message, "content": [], "stop_reason": None}
        start["usage"] = {**message["usage"], "output_tokens": 1}
        events = [{"type": "message_start", "message": start}, {"type": "ping"}]
        if self.break_stream == "error":
            self.break_stream = None
            error = {"type": "overloaded_error", "message": "Overloaded"}
            return Reply(
                200, events=[_sse(e) for e in events] + [_sse({"type": "error", "error": error})]
            )
        for index, block in enumerate(message["content"]):
            if block["type"] == "text":
                events.append(
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "text", "text": ""},
                    }
                )
                events += [
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "text_delta", "text": p},
                    }
                    for p in _pieces(block["text"])
                ]
            else:
                events.append(
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {**block, "input": {}},
                    }
                )
                events += [
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": p},
                    }
                    for p in _pieces(json.dumps(block["input"]))
                ]
            events.append({"type": "content_block_stop", "index": index})
        events.append(
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": message["usage"]["output_tokens"]},
            }
        )
        events.append({"type": "message_stop"})
        frames = [_sse(e) for e in events]
        if self.break_stream == "cut":
            self.break_stream = None
            return Reply(200, events=frames[:4], complete=False)
        return Reply(200, events=frames)


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content)


# --------------------------------------------------------------------------- OpenAI


def _openai_error(status: int, kind: str, message: str, code: str | None = None) -> Reply:
    return Reply(status, {"error": {"message": message, "type": kind, "param": None, "code": code}})


class FakeOpenAIServer(_FakeCloud):
    """A fake of an OpenAI-compatible `POST /v1/chat/completions`; `api_key=None` is an
    endpoint that asks for no key (a self-hosted one)."""

    default_model = "gpt-fake-1"

    def reply(self, request: Received) -> Reply:
        if request.path != "/v1/chat/completions" or request.method != "POST":
            return _openai_error(404, "invalid_request_error", f"Unknown URL {request.path}")
        auth = request.headers.get("authorization")
        if self.api_key is not None and auth != f"Bearer {self.api_key}":
            said = f" {auth}" if self.echo_key_in_errors else ""
            return _openai_error(
                401,
                "invalid_request_error",
                f"Incorrect API key provided:{said}",
                "invalid_api_key",
            )
        body = request.body
        if not isinstance(body, dict) or not body.get("messages"):
            return _openai_error(400, "invalid_request_error", "messages: required")
        if body.get("model") != self.model:
            return _openai_error(
                404,
                "invalid_request_error",
                f"The model `{body.get('model')}` does not exist",
                "model_not_found",
            )
        messages = body["messages"]
        pending: set[str] = set()
        for i, msg in enumerate(messages):
            if msg["role"] == "tool" and msg.get("tool_call_id") not in pending:
                return _openai_error(
                    400, "invalid_request_error", f"messages.[{i}]: tool_call_id has no tool call"
                )
            if msg["role"] == "assistant":
                pending = {c["id"] for c in msg.get("tool_calls") or ()}
        results = []
        for msg in reversed(messages):
            if msg["role"] != "tool":
                break
            results.insert(0, _text_of(msg.get("content")))
        tools = body.get("tools") or []
        names = [] if body.get("tool_choice") == "none" else [t["function"]["name"] for t in tools]
        script = self.script(tools, names, results)
        call = None
        if script.tool:
            call = {
                "id": f"call_fake_{len(self.received)}",
                "type": "function",
                "function": {"name": script.tool, "arguments": json.dumps(self.tool_input)},
            }
        usage = {
            "prompt_tokens": _tokens(messages),
            "completion_tokens": _tokens(script.text),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        finish = "tool_calls" if call else "stop"
        if body.get("stream"):
            return self._stream(script.text, call, finish, usage, body)
        message: dict[str, Any] = {"role": "assistant", "content": script.text}
        if call:
            message["tool_calls"] = [call]
        return Reply(
            200,
            {
                "id": f"chatcmpl-fake-{len(self.received)}",
                "object": "chat.completion",
                "model": self.model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": usage,
            },
        )

    def _stream(
        self,
        text: str,
        call: dict[str, Any] | None,
        finish: str,
        usage: dict[str, int],
        body: dict[str, Any],
    ) -> Reply:
        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            return {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            }

        chunks = [chunk({"role": "assistant", "content": ""})]
        chunks += [chunk({"content": p}) for p in _pieces(text)]
        if call:
            head = {
                **call,
                "index": 0,
                "function": {"name": call["function"]["name"], "arguments": ""},
            }
            chunks.append(chunk({"tool_calls": [head]}))
            chunks += [
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]})
                for p in _pieces(call["function"]["arguments"])
            ]
        chunks.append(chunk({}, finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            chunks.append(
                {"id": "chatcmpl-fake", "model": self.model, "choices": [], "usage": usage}
            )
        frames = [f"data: {json.dumps(c)}\n\n" for c in chunks] + ["data: [DONE]\n\n"]
        if self.break_stream == "cut":
            self.break_stream = None
            return Reply(200, events=frames[:3], complete=False)
        return Reply(200, events=frames)
