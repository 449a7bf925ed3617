"""Where generations come from. The harness only needs `Generator.generate(problem, settings) -> Generation`,
called from several threads at once; two implementations:

    OpenAIGenerator  any OpenAI-compatible server (vLLM serving MiMo-7B, `mimo serve`), chat API by default,
                     the completions API for base models; retries with exponential backoff, then EndpointError.
    LocalGenerator   a local checkpoint through mimo.engine (thin adapter, imported lazily).

Chat requests carry an explicitly empty system message: MiMo is evaluated with an empty system prompt, and
leaving the message out would let a Qwen-style chat template insert its default one.
"""

import os
from dataclasses import dataclass
from typing import Protocol

from mimo.eval.benchmarks import Problem


@dataclass(frozen=True)
class SamplingSettings:
    """Sampling for every request; MiMo's evaluation defaults (spec 5.1)."""

    temperature: float = 0.6
    top_p: float = 0.95
    max_tokens: int = 32768


@dataclass
class Generation:
    prompt: str  # exactly what was sent (the user message for chat)
    text: str


class EndpointError(RuntimeError):
    """The endpoint failed after all retries."""


class Generator(Protocol):
    def generate(self, problem: Problem, settings: SamplingSettings) -> Generation: ...


class OpenAIGenerator:
    """An OpenAI-compatible HTTP endpoint via the `openai` client (its retries back off exponentially)."""

    def __init__(self, base_url: str, model: str, api: str = "chat", max_retries: int = 4,
                 timeout_s: float = 3600.0, api_key: str | None = None):
        from openai import OpenAI  # imported here: only endpoint runs need it

        if api not in ("chat", "completions"):
            raise ValueError(f"unknown api {api!r}: use chat or completions")
        self.base_url, self.model, self.api, self.max_retries = base_url, model, api, max_retries
        self.client = OpenAI(base_url=base_url, api_key=api_key or os.environ.get("OPENAI_API_KEY", "EMPTY"),
                             max_retries=max_retries, timeout=timeout_s)

    def generate(self, problem: Problem, settings: SamplingSettings) -> Generation:
        import openai

        sampling = dict(model=self.model, temperature=settings.temperature, top_p=settings.top_p,
                        max_tokens=settings.max_tokens)
        try:
            if self.api == "chat":
                messages = [{"role": "system", "content": ""}, {"role": "user", "content": problem.text}]
                reply = self.client.chat.completions.create(messages=messages, **sampling)
                return Generation(problem.text, reply.choices[0].message.content or "")
            prompt, stop = problem.completion_prompt()
            reply = self.client.completions.create(prompt=prompt, stop=stop or None, **sampling)
            return Generation(prompt, reply.choices[0].text)
        except openai.APIError as e:
            raise EndpointError(f"{self.base_url} ({self.api} API): {type(e).__name__}: {e} "
                                f"(after {self.max_retries} retries)") from e


class LocalGenerator:
    """A local checkpoint, generated in this process by mimo's continuous-batching engine.

    The harness calls `generate` from many threads at once; each call becomes one engine request, and an
    AsyncEngine on its own event-loop thread batches whatever is in flight, as `mimo serve` does.
    """

    def __init__(self, checkpoint: str, api: str = "chat", max_batch_size: int = 32):
        import asyncio
        import threading

        from mimo.engine import AsyncEngine
        from mimo.serve.server import load_engine

        if api not in ("chat", "completions"):
            raise ValueError(f"unknown api {api!r}: use chat or completions")
        self.api = api
        self.engine = load_engine(checkpoint, max_batch_size=max_batch_size)
        self.tokenizer = self.engine.tokenizer
        self.async_engine = AsyncEngine(self.engine, max_waiting=1 << 20).start()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="local-generator", daemon=True).start()

    def generate(self, problem: Problem, settings: SamplingSettings) -> Generation:
        import asyncio

        from mimo.engine import SamplingParams

        if self.api == "chat":
            sent = problem.text
            messages = [{"role": "system", "content": ""}, {"role": "user", "content": problem.text}]
            prompt = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
            stop: list[str] = []
        else:
            sent, stop = problem.completion_prompt()
            prompt = self.tokenizer.encode(sent)
        room = self.engine.max_seq_len - len(prompt)
        if room < 1:
            return Generation(sent, "")  # longer than the context: an empty (wrong) answer, not a crash
        params = SamplingParams(max_tokens=min(settings.max_tokens, room), temperature=settings.temperature,
                                top_p=settings.top_p, stop=list(stop or []))
        out = asyncio.run_coroutine_threadsafe(self._final(prompt, params), self.loop).result()
        return Generation(sent, out.samples[0].text)

    async def _final(self, prompt: list[int], params):
        last = None
        async for out in self.async_engine.generate(prompt, params):
            last = out
        return last
