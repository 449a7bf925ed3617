"""An Engine on a background thread, for asyncio servers.

The thread owns the engine: requests and aborts reach it through an inbox, and after every step it
hands each changed request a snapshot of its output through that request's asyncio queue. torch
releases the GIL inside its kernels, so the event loop keeps serving HTTP while the model runs.
A consumer that stops listening (a client that disconnected) aborts its request, which frees the
request's cache slots at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import queue
import threading
import time
import uuid
from typing import AsyncIterator

from mimo.engine.engine import Engine, RequestOutput
from mimo.engine.sampling import SamplingParams

log = logging.getLogger(__name__)


class EngineBusy(RuntimeError):
    """Too many requests in flight (the server answers 429)."""


def _snapshot(out: RequestOutput) -> RequestOutput:
    samples = [dataclasses.replace(s, token_ids=list(s.token_ids), logprobs=list(s.logprobs),
                                   raw_logprobs=list(s.raw_logprobs),
                                   top_logprobs=None if s.top_logprobs is None else list(s.top_logprobs))
               for s in out.samples]
    return RequestOutput(out.request_id, out.prompt_token_ids, samples)


class AsyncEngine:
    def __init__(self, engine: Engine, max_waiting: int = 256):
        self.engine = engine
        self.max_in_flight = engine.max_batch_size + max_waiting
        self.tokens_per_second = 0.0  # generation throughput, smoothed over recent steps
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._streams: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._stop = False
        self._thread: threading.Thread | None = None

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> "AsyncEngine":
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="mimo-engine", daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def num_in_flight(self) -> int:
        return len(self._streams)

    # ---- the asyncio side ---------------------------------------------------------------------

    async def generate(self, prompt: list[int], params: SamplingParams,
                       request_id: str | None = None) -> AsyncIterator[RequestOutput]:
        """Yield a snapshot of the request's output after every step that changed it, the last one
        finished. Raises ValueError for a request the engine cannot serve, EngineBusy when full."""
        self.engine.check_request(prompt, params)
        if not self.alive:
            raise RuntimeError("the engine is not running")
        if len(self._streams) >= self.max_in_flight:
            raise EngineBusy(f"{len(self._streams)} requests in flight; retry later")
        request_id = request_id or uuid.uuid4().hex
        stream: asyncio.Queue = asyncio.Queue()
        self._streams[request_id] = (asyncio.get_running_loop(), stream)
        self._send("add", request_id, prompt, params)
        try:
            while True:
                item = await stream.get()
                if isinstance(item, Exception):
                    raise item
                yield item
                if item.finished:
                    return
        finally:
            if self._streams.pop(request_id, None) is not None:  # left early: free the cache now
                self._send("abort", request_id)

    def abort(self, request_id: str) -> None:
        self._streams.pop(request_id, None)
        self._send("abort", request_id)

    def _send(self, *message) -> None:
        self._inbox.put(message)
        self._wake.set()

    # ---- the engine thread --------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop:
            self._drain_inbox()
            if not self.engine.has_unfinished():
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            start, generated = time.perf_counter(), self.engine.stats.generation_tokens
            try:
                outputs = self.engine.step()
            except Exception as e:  # a failing step must not take the server down: fail what is in flight
                log.exception("engine step failed")
                for request_id in list(self.engine.requests):
                    self.engine.abort(request_id)
                    self._deliver(request_id, RuntimeError(f"generation failed: {e}"))
                continue
            rate = (self.engine.stats.generation_tokens - generated) / max(time.perf_counter() - start, 1e-9)
            self.tokens_per_second = 0.8 * self.tokens_per_second + 0.2 * rate
            for out in outputs:
                self._deliver(out.request_id, _snapshot(out))
        for request_id in list(self.engine.requests):
            self.engine.abort(request_id)

    def _drain_inbox(self) -> None:
        while True:
            try:
                kind, request_id, *args = self._inbox.get_nowait()
            except queue.Empty:
                return
            if kind == "abort":
                self.engine.abort(request_id)
            elif request_id in self._streams:  # not already abandoned
                try:
                    self.engine.add_request(*args, request_id=request_id)
                except ValueError as e:
                    self._deliver(request_id, e)

    def _deliver(self, request_id: str, item: RequestOutput | Exception) -> None:
        entry = self._streams.get(request_id)
        if entry is None:
            return
        if isinstance(item, Exception) or item.finished:
            self._streams.pop(request_id, None)
        loop, stream = entry
        try:
            loop.call_soon_threadsafe(stream.put_nowait, item)
        except RuntimeError:  # the event loop has closed
            pass
