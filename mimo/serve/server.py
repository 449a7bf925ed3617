"""`mimo serve`: an OpenAI-compatible HTTP server over the continuous-batching engine.

Endpoints: /v1/models, /v1/completions, /v1/chat/completions (SSE streaming, n, stop, seed,
logprobs, usage), /health and Prometheus /metrics. Chat replies put the text inside <think>...</think>
in `reasoning_content`, as vLLM's reasoning parsers do.

Every request runs through one AsyncEngine, so concurrent clients share decode steps. Untrusted
input never reaches the engine unchecked: schema errors, unsupported fields, prompts past the context
and oversized max_tokens become OpenAI-style 400s; a full queue is a 429; a dead engine a 503. A
client that disconnects aborts its request, which frees its cache at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mimo.engine import AsyncEngine, Engine, EngineBusy, RequestOutput, Sample, SamplingParams
from mimo.serve.protocol import ChatCompletionRequest, CompletionRequest, UpdateWeightsRequest, error_body
from mimo.serve.reasoning import THINK_START, ReasoningParser, split_reasoning

log = logging.getLogger(__name__)


class APIError(Exception):
    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.body = status, error_body(message, type, param, code)


def load_engine(checkpoint: str | Path, max_batch_size: int = 32, max_seq_len: int | None = None,
                speculative_tokens: int | None = None, dtype: str | None = None, prepack: bool = True) -> Engine:
    """A checkpoint folder (weights + tokenizer) -> an Engine; MTP speculation (k=1, MiMo's published
    setting) is on by default where the checkpoint has MTP layers."""
    from mimo.model import MiMoForCausalLM
    from mimo.tokenizer import Tokenizer

    model = MiMoForCausalLM.from_pretrained(checkpoint, dtype=dtype)
    tokenizer = Tokenizer.from_pretrained(checkpoint)
    if speculative_tokens is None:
        speculative_tokens = 1 if model.config.num_nextn_predict_layers else 0
    return Engine(model, tokenizer, max_batch_size=max_batch_size, max_seq_len=max_seq_len,
                  num_speculative_tokens=speculative_tokens, prepack=prepack)


# ---- response pieces ---------------------------------------------------------------------------

def _usage(prompt_tokens: int, samples: list[Sample]) -> dict:
    completion = sum(len(s.token_ids) for s in samples)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}


class _Formatter:
    """Token text and logprob entries in the two OpenAI shapes."""

    def __init__(self, decode: Callable[[list[int]], str]):
        self.decode = decode

    def chat_logprobs(self, sample: Sample, start: int, end: int) -> dict:
        entries = []
        for i in range(start, end):
            token = self.decode([sample.token_ids[i]])
            top = [{"token": (t := self.decode([tid])), "logprob": lp, "bytes": list(t.encode())}
                   for tid, lp in (sample.top_logprobs[i] if sample.top_logprobs else {}).items()]
            entries.append({"token": token, "logprob": sample.raw_logprobs[i], "bytes": list(token.encode()),
                            "top_logprobs": top})
        return {"content": entries}

    def completion_logprobs(self, sample: Sample, start: int, end: int, offset: int, as_ids: bool = False) -> dict:
        tokens = [f"token_id:{t}" if as_ids else self.decode([t]) for t in sample.token_ids[start:end]]
        offsets = []
        for t in tokens:
            offsets.append(offset)
            offset += len(t)
        top = [{self.decode([tid]): lp for tid, lp in sample.top_logprobs[i].items()} if sample.top_logprobs else None
               for i in range(start, end)]
        return {"tokens": tokens, "token_logprobs": sample.raw_logprobs[start:end], "top_logprobs": top,
                "text_offset": offsets}


class _StreamState:
    """Per-sample progress of a stream: what text and tokens have been sent."""

    def __init__(self, thinking: bool):
        self.text_sent = self.tokens_sent = 0
        self.parser = ReasoningParser(thinking)
        self.done = False


def _sse(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"


# ---- the app -----------------------------------------------------------------------------------

def create_app(engine: Engine, model_name: str, max_waiting: int = 256) -> FastAPI:
    async_engine = AsyncEngine(engine, max_waiting=max_waiting)
    tokenizer = engine.tokenizer
    fmt = _Formatter(tokenizer.decode)
    started = time.time()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async_engine.start()
        yield
        async_engine.shutdown()

    app = FastAPI(title="mimo", lifespan=lifespan)
    app.state.engine = async_engine
    app.state.updating = False  # weights are being replaced (/update_weights_from_disk)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return JSONResponse(exc.body, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        message = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'body'}: {e.get('msg')}"
                            for e in exc.errors()[:5])
        return JSONResponse(error_body(message or "invalid request", param=param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(exc.detail), kind), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception):
        log.exception("unhandled error")
        return JSONResponse(error_body(f"internal error: {exc}", "server_error"), status_code=500)

    # ---- shared request handling ---------------------------------------------------------------

    def check_model(name: str | None) -> None:
        if name is not None and name != model_name:
            raise APIError(404, f"The model `{name}` does not exist; this server serves `{model_name}`.",
                           "not_found_error", "model", "model_not_found")

    def resolve_max_tokens(prompt: list[int], max_tokens: int | None) -> int:
        room = engine.max_seq_len - len(prompt)
        if room < 1:
            raise APIError(400, f"This model's maximum context length is {engine.max_seq_len} tokens. However, "
                           f"your prompt has {len(prompt)} tokens.", param="messages", code="context_length_exceeded")
        if max_tokens is None:
            return room
        if max_tokens > room:
            raise APIError(400, f"This model's maximum context length is {engine.max_seq_len} tokens. However, you "
                           f"requested {len(prompt) + max_tokens} tokens ({len(prompt)} in the prompt, {max_tokens} "
                           "in the completion).", param="max_tokens", code="context_length_exceeded")
        return max_tokens

    async def outputs(request: Request, prompt: list[int], params: SamplingParams) -> AsyncIterator[RequestOutput]:
        """Engine snapshots for one request; engine-side refusals become API errors. Stops (and so
        aborts the request) once the client has gone."""
        if not async_engine.alive:
            raise APIError(503, "the engine is not running", "service_unavailable")
        if app.state.updating:
            raise APIError(503, "the weights are being updated; retry shortly", "service_unavailable")
        try:
            stream = async_engine.generate(prompt, params, request_id=uuid.uuid4().hex)
            async with aclosing(stream):
                async for out in stream:
                    yield out
                    if not out.finished and await request.is_disconnected():
                        return
        except EngineBusy as e:
            raise APIError(429, str(e), "rate_limit_exceeded", code="rate_limit_exceeded") from e
        except ValueError as e:
            raise APIError(400, str(e)) from e

    async def final_output(request: Request, prompt: list[int], params: SamplingParams) -> RequestOutput:
        last = None
        async for out in outputs(request, prompt, params):
            last = out
        if last is None or not last.finished:
            raise APIError(499, "client disconnected", code="client_closed_request")
        return last

    async def first_then_rest(gen: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """Pull the first chunk before the response starts, so errors found up front (a full queue, a
        bad request) are still proper HTTP errors rather than a broken stream."""
        first = await gen.__anext__()

        async def rest():
            async with aclosing(gen):
                yield first
                async for chunk in gen:
                    yield chunk
        return rest()

    def holdback(params: SamplingParams, sample: Sample) -> int:
        # While a stop string may still be completing, the text it would cut must not be streamed yet.
        if sample.finish_reason is not None or not params.stop:
            return len(sample.text)
        return max(0, len(sample.text) - max(len(s) for s in params.stop) + 1)

    # ---- endpoints -----------------------------------------------------------------------------

    @app.get("/health")
    async def health():
        if not async_engine.alive:
            raise APIError(503, "the engine is not running", "service_unavailable")
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": int(started),
                                            "owned_by": "mimo", "max_model_len": engine.max_seq_len}]}

    @app.get("/metrics")
    async def metrics():
        stats = engine.stats
        lines = [
            ("mimo_requests_waiting", "gauge", "Requests queued for a slot.", engine.num_waiting),
            ("mimo_requests_running", "gauge", "Sequences in the running batch.", engine.num_running),
            ("mimo_requests_in_flight", "gauge", "Requests accepted and not finished.", async_engine.num_in_flight),
            ("mimo_generation_tokens_per_second", "gauge", "Recent decode throughput.", async_engine.tokens_per_second),
            ("mimo_prompt_tokens_total", "counter", "Prompt tokens prefilled.", stats.prompt_tokens),
            ("mimo_generation_tokens_total", "counter", "Tokens generated.", stats.generation_tokens),
            ("mimo_requests_finished_total", "counter", "Requests completed.", stats.finished_requests),
        ]
        text = "".join(f"# HELP {n} {h}\n# TYPE {n} {t}\n{n} {v}\n" for n, t, h, v in lines)
        if engine.k:
            for name, help_, values in (
                    ("mimo_spec_decode_acceptance_rate", "Accepted / proposed drafts per draft position.",
                     stats.acceptance_rate),
                    ("mimo_spec_decode_draft_tokens_total", "Drafts verified per position.", stats.draft_proposed),
                    ("mimo_spec_decode_accepted_tokens_total", "Drafts accepted per position.", stats.draft_accepted)):
                kind = "gauge" if name.endswith("rate") else "counter"
                text += f"# HELP {name} {help_}\n# TYPE {name} {kind}\n"
                text += "".join(f'{name}{{position="{i}"}} {v}\n' for i, v in enumerate(values))
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    @app.post("/update_weights_from_disk")
    async def update_weights_from_disk(body: UpdateWeightsRequest):
        """Reload the weights from a checkpoint folder in place (SGLang's RL weight-sync endpoint). Refused
        while requests are in flight: their KV caches were computed with the old weights."""
        from mimo.checkpoint import CheckpointError, load_weights_into

        if app.state.updating or async_engine.num_in_flight or engine.has_unfinished():
            raise APIError(409, "requests are in flight; update weights between rollout batches", code="busy")
        app.state.updating = True  # new requests get a 503 until the weights are whole again
        try:
            await asyncio.to_thread(load_weights_into, engine.model, body.model_path)
        except (CheckpointError, ValueError, OSError) as e:
            raise APIError(400, f"cannot load weights: {e}", param="model_path") from e
        finally:
            app.state.updating = False
        return {"success": True, "message": f"loaded weights from {body.model_path}"}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        check_model(body.model)
        prompt = tokenizer.encode(body.prompt) if isinstance(body.prompt, str) else list(body.prompt)
        params = body.sampling_params(resolve_max_tokens(prompt, body.max_tokens), body.logprobs)
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        head = {"id": rid, "object": "text_completion", "created": created, "model": model_name}

        if not body.stream:
            out = await final_output(request, prompt, params)
            choices = [{"index": s.index, "text": s.text, "finish_reason": s.finish_reason,
                        "logprobs": fmt.completion_logprobs(s, 0, len(s.token_ids), 0, body.return_tokens_as_token_ids)
                        if body.logprobs is not None else None} for s in out.samples]
            return {**head, "choices": choices, "usage": _usage(len(prompt), out.samples)}

        async def events():
            states = [_StreamState(False) for _ in range(params.n)]
            last = None
            async for out in outputs(request, prompt, params):
                last = out
                for s, st in zip(out.samples, states):
                    if st.done:
                        continue
                    end = holdback(params, s)
                    text, n_tok = s.text[st.text_sent:end], len(s.token_ids)
                    if not text and s.finish_reason is None:
                        continue
                    choice = {"index": s.index, "text": text, "finish_reason": s.finish_reason, "logprobs": None}
                    if body.logprobs is not None:
                        choice["logprobs"] = fmt.completion_logprobs(s, st.tokens_sent, n_tok, st.text_sent,
                                                                     body.return_tokens_as_token_ids)
                    st.text_sent, st.tokens_sent, st.done = end, n_tok, s.finish_reason is not None
                    yield _sse({**head, "choices": [choice]})
            if body.stream_options and body.stream_options.include_usage and last is not None:
                yield _sse({**head, "choices": [], "usage": _usage(len(prompt), last.samples)})
            yield b"data: [DONE]\n\n"

        return StreamingResponse(await first_then_rest(events()), media_type="text/event-stream")

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        check_model(body.model)
        try:
            text = tokenizer.apply_chat_template([m.to_template() for m in body.messages],
                                                 add_generation_prompt=True, tokenize=False)
        except Exception as e:  # a template that raises on these messages is the client's error
            raise APIError(400, f"cannot format the messages: {e}", param="messages") from e
        thinking = text.rstrip().endswith(THINK_START)  # the template opened the reasoning block itself
        prompt = tokenizer.encode(text)
        max_tokens = body.max_completion_tokens or body.max_tokens
        top = (body.top_logprobs or 0) if body.logprobs else None
        params = body.sampling_params(resolve_max_tokens(prompt, max_tokens), top)
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        head = {"id": rid, "object": "chat.completion", "created": created, "model": model_name}

        if not body.stream:
            out = await final_output(request, prompt, params)
            choices = []
            for s in out.samples:
                reasoning, content = split_reasoning(s.text, thinking)
                choices.append({"index": s.index, "finish_reason": s.finish_reason,
                                "message": {"role": "assistant", "content": content, "reasoning_content": reasoning},
                                "logprobs": fmt.chat_logprobs(s, 0, len(s.token_ids)) if body.logprobs else None})
            return {**head, "choices": choices, "usage": _usage(len(prompt), out.samples)}

        head["object"] = "chat.completion.chunk"

        async def events():
            states = [_StreamState(thinking) for _ in range(params.n)]
            last = None
            async for out in outputs(request, prompt, params):
                if last is None:  # the role comes first, once per choice, as OpenAI streams it
                    for j in range(params.n):
                        yield _sse({**head, "choices": [{"index": j, "delta": {"role": "assistant", "content": ""},
                                                         "logprobs": None, "finish_reason": None}]})
                last = out
                for s, st in zip(out.samples, states):
                    if st.done:
                        continue
                    end = holdback(params, s)
                    finished = s.finish_reason is not None
                    reasoning, content = st.parser.feed(s.text[st.text_sent:end], final=finished)
                    n_tok = len(s.token_ids)
                    delta = {}
                    if reasoning:
                        delta["reasoning_content"] = reasoning
                    if content:
                        delta["content"] = content
                    if not delta and not finished:
                        continue
                    choice = {"index": s.index, "delta": delta, "logprobs": None, "finish_reason": s.finish_reason}
                    if body.logprobs:
                        choice["logprobs"] = fmt.chat_logprobs(s, st.tokens_sent, n_tok)
                    st.text_sent, st.tokens_sent, st.done = end, n_tok, finished
                    yield _sse({**head, "choices": [choice]})
            if body.stream_options and body.stream_options.include_usage and last is not None:
                yield _sse({**head, "choices": [], "usage": _usage(len(prompt), last.samples)})
            yield b"data: [DONE]\n\n"

        return StreamingResponse(await first_then_rest(events()), media_type="text/event-stream")

    return app


def serve(checkpoint: Path, host: str = "127.0.0.1", port: int = 8000, max_batch_size: int = 32,
          max_seq_len: int = 0, speculative_tokens: int = -1, dtype: str = "", max_waiting: int = 256,
          served_model_name: str = "", prepack: bool = True) -> None:
    """Serve CHECKPOINT with an OpenAI-compatible API (/v1/chat/completions, /v1/completions, /metrics).

    max_seq_len 0 = the model's context (capped at 4096); speculative_tokens -1 = 1 MTP draft where the
    checkpoint has MTP layers, 0 = off; dtype "" = the checkpoint's; --no-prepack: skip the engine's
    prepacked weight copies (CPU), for a model that fits in memory only once."""
    import uvicorn

    engine = load_engine(checkpoint, max_batch_size, max_seq_len or None,
                         None if speculative_tokens < 0 else speculative_tokens, dtype or None, prepack)
    app = create_app(engine, served_model_name or Path(checkpoint).name, max_waiting)
    uvicorn.run(app, host=host, port=port, log_level="warning")
