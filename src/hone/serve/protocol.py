"""OpenAI request and response shapes, checked the way OpenAI checks them, and the OpenAI error body.

Every bad request becomes an ``APIError`` that names the parameter at fault; the app turns it into
``{"error": {"message", "type", "param", "code"}}`` with a 4xx status, never a validation detail list.
"""
from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..data.conversation import Message, ToolCall

MAX_N = 8
MAX_STOP = 4


class APIError(Exception):
    """A request the server refuses, with the HTTP status and OpenAI's error fields."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error", headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, type=self.type, param=self.param, code=self.code)


def error_body(message: str, *, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class _Strict(BaseModel):
    # strict: "0.7" is not a temperature and true is not a count; unknown fields are ignored as OpenAI does
    model_config = ConfigDict(strict=True, extra="ignore")


class FunctionSpec(_Strict):
    name: str = Field(min_length=1, max_length=64)
    description: Optional[str] = None
    parameters: Optional[dict[str, Any]] = None


class ToolSpec(_Strict):
    type: Literal["function"]
    function: FunctionSpec


class FunctionCall(_Strict):
    name: str
    arguments: str


class ToolCallIn(_Strict):
    id: Optional[str] = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[str, list[dict[str, Any]], None] = None
    name: Optional[str] = None
    tool_calls: Optional[list[ToolCallIn]] = None
    tool_call_id: Optional[str] = None


class StreamOptions(_Strict):
    include_usage: bool = False


class _Sampling(_Strict):
    model: Optional[str] = None
    max_tokens: Optional[int] = Field(default=None, ge=1)
    temperature: Optional[float] = Field(default=None, ge=0, le=2)
    top_p: Optional[float] = Field(default=None, gt=0, le=1)
    top_k: Optional[int] = Field(default=None, ge=-1)
    n: int = Field(default=1, ge=1, le=MAX_N)
    stop: Union[str, list[str], None] = None
    seed: Optional[int] = None
    repetition_penalty: Optional[float] = Field(default=None, gt=0, le=10)
    presence_penalty: Optional[float] = Field(default=None, ge=-2, le=2)
    frequency_penalty: Optional[float] = Field(default=None, ge=-2, le=2)
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    logprobs: Optional[bool] = None
    user: Optional[str] = None


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: Optional[int] = Field(default=None, ge=1)
    tools: Optional[list[ToolSpec]] = None
    tool_choice: Union[Literal["none", "auto"], dict[str, Any], None] = None


class CompletionRequest(_Sampling):
    prompt: Union[str, list[str]]
    echo: bool = False


def parse_request(raw: bytes, cls: type[_Sampling]) -> Any:
    """The request body as ``cls``, or APIError(400) naming what is wrong."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise APIError(400, f"the request body is not valid JSON ({e}); send a JSON object") from None
    if not isinstance(data, dict):
        raise APIError(400, f"the request body must be a JSON object, not {type(data).__name__}")
    try:
        req = cls.model_validate_json(raw)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        param = _param(err["loc"])
        given = _given(data, err["loc"])
        raise APIError(400, f"invalid value for '{param}': {err['msg']}"
                       + (f" (got {given})" if given is not None else ""), param=param) from None
    _check(req, data)
    return req


def _param(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for p in loc:
        if isinstance(p, int):
            parts[-1:] = [f"{parts[-1]}[{p}]"] if parts else [f"[{p}]"]
        elif isinstance(p, str) and not p.startswith(("function-", "union[", "literal[", "list[", "str", "dict[")):
            parts.append(p)
    return ".".join(parts)


def _given(data: Any, loc: tuple[Any, ...]) -> str | None:
    cur = data
    for p in loc:
        if isinstance(cur, dict) and p in cur:
            cur = cur[p]
        elif isinstance(cur, list) and isinstance(p, int) and p < len(cur):
            cur = cur[p]
        else:
            break
    else:
        text = json.dumps(cur, ensure_ascii=False)
        return text if len(text) <= 60 else text[:57] + "..."
    return None


def _check(req: _Sampling, data: dict[str, Any]) -> None:
    """Rules a schema cannot say: combinations, and features this server does not offer."""
    if req.stream_options is not None and not req.stream:
        raise APIError(400, "stream_options is only allowed when stream is true", param="stream_options")
    stops = [req.stop] if isinstance(req.stop, str) else req.stop or []
    if len(stops) > MAX_STOP or any(not s for s in stops):
        raise APIError(400, f"stop takes at most {MAX_STOP} non-empty strings", param="stop")
    if req.logprobs:
        raise APIError(400, "logprobs are not supported by this server", param="logprobs")
    for p in ("presence_penalty", "frequency_penalty"):
        if getattr(req, p):
            raise APIError(400, f"{p} is not supported; use repetition_penalty", param=p)
    if isinstance(req, ChatRequest):
        if isinstance(req.tool_choice, dict):
            raise APIError(400, "tool_choice may be 'auto' or 'none'; forcing a tool is not supported",
                           param="tool_choice")
        if req.max_tokens is not None and req.max_completion_tokens is not None \
                and req.max_tokens != req.max_completion_tokens:
            raise APIError(400, "max_tokens and max_completion_tokens disagree; send one", param="max_tokens")


def to_messages(req: ChatRequest) -> list[Message]:
    """The request's messages in hone's shape (``developer`` is ``system``; text parts are joined)."""
    out: list[Message] = []
    for i, m in enumerate(req.messages):
        param = f"messages[{i}]"
        role = "system" if m.role == "developer" else m.role
        content = _text(m.content, f"{param}.content")
        calls: tuple[ToolCall, ...] = ()
        if m.tool_calls:
            if role != "assistant":
                raise APIError(400, f"{param}: only assistant messages carry tool_calls", param=param)
            calls = tuple(ToolCall(c.function.name, _arguments(c.function.arguments, f"{param}.tool_calls"))
                          for c in m.tool_calls)
        elif content is None:
            raise APIError(400, f"{param}: a {m.role} message needs content", param=f"{param}.content")
        if role == "system" and i > 0 and out and out[-1].role != "system":
            raise APIError(400, f"{param}: a system message may only open the conversation", param=param)
        out.append(Message(role, content or "", calls))
    if out[-1].role not in ("user", "tool"):
        raise APIError(400, "the last message must come from the user (or a tool result), not the "
                       f"{out[-1].role}", param=f"messages[{len(out) - 1}].role")
    return out


def _text(content: Any, param: str) -> str | None:
    if content is None or isinstance(content, str):
        return content
    parts = []
    for j, part in enumerate(content):
        kind = part.get("type")
        if kind != "text" or not isinstance(part.get("text"), str):
            raise APIError(400, f"{param}[{j}]: only text parts are supported (got type {kind!r})",
                           param=f"{param}[{j}]")
        parts.append(part["text"])
    return "".join(parts)


def _arguments(text: str, param: str) -> dict[str, Any] | str:
    try:
        args = json.loads(text)
    except ValueError:
        raise APIError(400, f"{param}: function arguments must be a JSON object string", param=param) from None
    return args if isinstance(args, dict) else text


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
