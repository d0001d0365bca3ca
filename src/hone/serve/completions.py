"""From a checked request to OpenAI response bodies: whole JSON or server-sent events.

All checks that need the model (its name, the prompt length against the context, tool support) happen in
``plan_*`` before any byte is sent, so an invalid streaming request still gets a plain 400.
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from ..config import GenCfg
from .backend import Job, Piece, with_overrides
from .protocol import APIError, ChatRequest, CompletionRequest, new_id, now, to_messages, usage
from .tools import OPEN, parse_tool_calls, supports_tools, writes_tool_call_tags

log = logging.getLogger("hone")


@dataclass
class Plan:
    backend: Any
    chat: bool
    model: str
    jobs: list[Job]
    prompt_tokens: int
    parse_tools: bool = False
    include_usage: bool = False
    id: str = ""
    created: int = field(default_factory=now)

    def cancel(self) -> None:
        for j in self.jobs:
            j.stop()


def _gen_for(req: Any, base: GenCfg, max_tokens: int) -> GenCfg:
    stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    temp = req.temperature
    do_sample = base.do_sample if temp is None else temp > 0
    top_k = req.top_k if req.top_k is None or req.top_k > 0 else 0  # -1 and 0 both mean "off"
    return with_overrides(base, max_new_tokens=max_tokens, do_sample=do_sample, temperature=temp or None,
                          top_p=req.top_p, top_k=top_k, repetition_penalty=req.repetition_penalty,
                          stop_words=tuple(stops))


def _budget(backend: Any, prompt: int, asked: int | None, default: int, what: str) -> int:
    ctx = backend.context_length
    if asked is not None and prompt + asked > ctx:
        raise APIError(400, f"This model's maximum context length is {ctx} tokens. However, you requested "
                       f"{prompt + asked} tokens ({prompt} in the {what}, {asked} in the completion). Please "
                       "reduce the length of the prompt or the completion.", param="messages" if what ==
                       "messages" else "prompt", code="context_length_exceeded")
    if prompt >= ctx:
        raise APIError(400, f"This model's maximum context length is {ctx} tokens. However, your {what} "
                       f"resulted in {prompt} tokens. Please reduce the length of the {what}.",
                       param="messages" if what == "messages" else "prompt", code="context_length_exceeded")
    return asked if asked is not None else min(default, ctx - prompt)


def plan_chat(backend: Any, req: ChatRequest, base: GenCfg) -> Plan:
    model = backend.resolve(req.model)
    messages = to_messages(req)
    tools = [t.model_dump(exclude_none=True) for t in req.tools or []] if req.tool_choice != "none" else []
    template = backend.template(model)
    if tools and not supports_tools(template, backend.tokenizer):
        raise APIError(400, f"the model '{model}' uses the chat template '{getattr(template, 'name', '?')}', "
                       "which has no tool format; serve it with a template that supports tools (e.g. "
                       "--template qwen)", param="tools")
    try:
        ids = backend.chat_prompt(model, messages, tools)
    except APIError:
        raise
    except Exception as e:  # a template that cannot render this conversation (e.g. roles out of order)
        raise APIError(400, f"the conversation cannot be rendered by the chat template: {_short(e)}",
                       param="messages") from None
    asked = req.max_completion_tokens or req.max_tokens
    gen = _gen_for(req, base, _budget(backend, len(ids), asked, base.max_new_tokens, "messages"))
    jobs = [Job(model, ids, gen, req.seed) for _ in range(req.n)]
    return Plan(backend, True, model, jobs, len(ids), parse_tools=bool(tools) and
                writes_tool_call_tags(template, backend.tokenizer),
                include_usage=bool(req.stream_options and req.stream_options.include_usage),
                id=new_id("chatcmpl"))


def plan_text(backend: Any, req: CompletionRequest, base: GenCfg) -> Plan:
    model = backend.resolve(req.model)
    if isinstance(req.prompt, list):
        if len(req.prompt) != 1:
            raise APIError(400, "send one prompt per request (a list of exactly one string)", param="prompt")
        text = req.prompt[0]
    else:
        text = req.prompt
    if req.echo:
        raise APIError(400, "echo is not supported", param="echo")
    ids = backend.text_prompt(text)
    gen = _gen_for(req, base, _budget(backend, len(ids), req.max_tokens, 16, "prompt"))
    jobs = [Job(model, ids, gen, req.seed) for _ in range(req.n)]
    return Plan(backend, False, model, jobs, len(ids),
                include_usage=bool(req.stream_options and req.stream_options.include_usage), id=new_id("cmpl"))


def _short(e: Exception) -> str:
    return str(e).splitlines()[0][:300] if str(e) else type(e).__name__


async def pieces(plan: Plan) -> AsyncIterator[tuple[int, Piece]]:
    """(choice index, piece) as the choices are generated; all of a request's choices are queued together so the
    engine batches them (and one seed covers them all). Leaving early cancels the generation."""
    loop = asyncio.get_running_loop()
    q: asyncio.Queue[Any] = asyncio.Queue()

    def put(item: Any) -> None:
        try:
            loop.call_soon_threadsafe(q.put_nowait, item)
        except RuntimeError:  # the loop has closed (server stopping); nobody is listening
            plan.cancel()

    def drain(i: int, handle: Any) -> None:
        try:
            for p in plan.backend.pieces(handle):
                put((i, p))
        except BaseException as e:
            put((i, e))
        finally:
            put((i, None))

    def work() -> None:
        try:
            handles = [plan.backend.start(j) for j in plan.jobs]
        except BaseException as e:
            put((-1, e))
            return
        for i, h in enumerate(handles):
            threading.Thread(target=drain, args=(i, h), daemon=True, name="hone-reply").start()

    threading.Thread(target=work, daemon=True, name="hone-submit").start()
    open_jobs = len(plan.jobs)
    try:
        while open_jobs:
            i, item = await q.get()
            if isinstance(item, BaseException):
                raise item
            if item is None:
                open_jobs -= 1
                continue
            yield i, item
    finally:
        plan.cancel()


async def whole(plan: Plan) -> dict[str, Any]:
    texts: list[list[str]] = [[] for _ in plan.jobs]
    reasons, counts = ["stop"] * len(plan.jobs), [0] * len(plan.jobs)
    async for i, p in pieces(plan):
        texts[i].append(p.text)
        if p.finish_reason:
            reasons[i], counts[i] = p.finish_reason, p.completion_tokens
    choices = [_choice(plan, i, "".join(t), reasons[i]) for i, t in enumerate(texts)]
    obj = "chat.completion" if plan.chat else "text_completion"
    return {"id": plan.id, "object": obj, "created": plan.created, "model": plan.model, "choices": choices,
            "usage": usage(plan.prompt_tokens, sum(counts))}


def _choice(plan: Plan, i: int, text: str, reason: str) -> dict[str, Any]:
    if not plan.chat:
        return {"index": i, "text": text, "logprobs": None, "finish_reason": reason}
    msg: dict[str, Any] = {"role": "assistant", "content": text}
    if plan.parse_tools:
        content, calls = parse_tool_calls(text)
        if calls:
            msg, reason = {"role": "assistant", "content": content, "tool_calls": calls}, "tool_calls"
    return {"index": i, "message": msg, "logprobs": None, "finish_reason": reason}


async def stream_events(plan: Plan) -> AsyncIterator[str]:
    """Server-sent events: chunks, an optional usage chunk, then ``[DONE]``; an engine error becomes an error
    event (and still ``[DONE]``) so the client never hangs."""
    completion = 0
    held = [""] * len(plan.jobs)  # with tools: text from the first "<tool_call>" on waits for the reply's end
    try:
        if plan.chat:
            for i in range(len(plan.jobs)):
                yield _event(plan, _delta(plan, i, {"role": "assistant", "content": ""}))
        async for i, p in pieces(plan):
            text = p.text
            if plan.parse_tools:
                buf = held[i] + text
                k = buf.find(OPEN)
                keep = len(buf) - k if k >= 0 else _partial(buf, OPEN)
                text, held[i] = buf[:len(buf) - keep], buf[len(buf) - keep:]
            if text:
                yield _event(plan, _text_delta(plan, i, text))
            if p.finish_reason is None:
                continue
            completion += p.completion_tokens
            reason = p.finish_reason
            if held[i]:
                content, calls = parse_tool_calls(held[i])
                if calls:
                    reason = "tool_calls"
                    yield _event(plan, _delta(plan, i, {"tool_calls": [
                        {"index": j, **c} for j, c in enumerate(calls)]}))
                else:
                    yield _event(plan, _text_delta(plan, i, held[i]))
            yield _event(plan, _delta(plan, i, {}, reason) if plan.chat else
                         {"index": i, "text": "", "logprobs": None, "finish_reason": reason})
        if plan.include_usage:
            yield _sse(_envelope(plan, [], usage(plan.prompt_tokens, completion)))
    except asyncio.CancelledError:
        plan.cancel()
        raise
    except Exception as e:
        log.error("generation failed mid-stream", exc_info=e)
        plan.cancel()
        yield _sse({"error": {"message": f"the engine failed while generating ({type(e).__name__}); the "
                              "reply is incomplete", "type": "server_error", "param": None, "code": "engine_error"}})
    yield "data: [DONE]\n\n"


def _partial(text: str, tag: str) -> int:
    """Length of the tail of ``text`` that could begin ``tag``."""
    for k in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:k]):
            return k
    return 0


def _text_delta(plan: Plan, i: int, text: str) -> dict[str, Any]:
    if plan.chat:
        return _delta(plan, i, {"content": text})
    return {"index": i, "text": text, "logprobs": None, "finish_reason": None}


def _delta(plan: Plan, i: int, delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
    return {"index": i, "delta": delta, "logprobs": None, "finish_reason": reason}


def _event(plan: Plan, choice: dict[str, Any]) -> str:
    return _sse(_envelope(plan, [choice], None))


def _envelope(plan: Plan, choices: list[dict[str, Any]], use: dict[str, int] | None) -> dict[str, Any]:
    obj = "chat.completion.chunk" if plan.chat else "text_completion"
    out: dict[str, Any] = {"id": plan.id, "object": obj, "created": plan.created, "model": plan.model,
                           "choices": choices}
    if plan.include_usage:
        out["usage"] = use
    return out


def _sse(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"
