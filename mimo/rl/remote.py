"""Rollouts on an external OpenAI-compatible server, and syncing the trainer's weights to it.

The scale path for RL on GPUs: generation runs in a separate server (`mimo serve`, SGLang, or vLLM
serving the policy) while the trainer runs under torchrun. `RemoteEngine` offers the slice of the
`mimo.engine.Engine` interface the rollout collector uses (add_request / step / abort), sending each
request to `/v1/completions` with the prompt as token ids and asking for the sampled token ids back
(`logprobs` + vLLM's `return_tokens_as_token_ids`), from a pool of threads so requests overlap.

Weight sync ("checkpoint" mechanism): after every optimizer step the trainer writes the policy as a
Hugging Face checkpoint folder (atomically) and POSTs `{"model_path": folder}` to the server's
`/update_weights_from_disk` (the endpoint name and body of SGLang; `mimo serve` implements it, refusing
while requests are in flight). Rollouts are collected only between syncs, so every response comes from
the current policy. The trainer always recomputes the old log-probs itself with a remote engine
(`grpo.old_logprobs=recompute`): a different engine's numerics (bf16 kernels, another attention) make
its log-probs differ from the trainer's, the mismatch TRL and verl had to patch.
"""

from __future__ import annotations

import json
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from mimo.engine import SamplingParams


@dataclass
class RemoteSample:
    index: int
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str | None = None


@dataclass
class RemoteOutput:
    request_id: str
    samples: list[RemoteSample]
    finished: bool = True


class RemoteEngine:
    def __init__(self, base_url: str, model: str, eos_token_ids: set[int], max_batch_size: int = 64,
                 max_retries: int = 4, timeout_s: float = 3600.0):
        from openai import OpenAI

        self.base_url = base_url.rstrip("/")
        self.client = OpenAI(base_url=self.base_url, api_key="EMPTY", max_retries=max_retries, timeout=timeout_s)
        self.model, self.eos_token_ids, self.max_batch_size = model, set(eos_token_ids), max_batch_size
        self.pool = ThreadPoolExecutor(max_workers=max_batch_size, thread_name_prefix="remote-rollout")
        self.pending: dict[str, Future] = {}

    def add_request(self, prompt: list[int], params: SamplingParams, request_id: str) -> str:
        self.pending[request_id] = self.pool.submit(self._complete, request_id, prompt, params)
        return request_id

    def _complete(self, request_id: str, prompt: list[int], params: SamplingParams) -> RemoteOutput:
        reply = self.client.completions.create(
            model=self.model, prompt=prompt, n=params.n, max_tokens=params.max_tokens,
            temperature=params.temperature, top_p=params.top_p, seed=params.seed, logprobs=0,
            extra_body={"return_tokens_as_token_ids": True})
        samples = []
        for choice in sorted(reply.choices, key=lambda c: c.index):
            tokens = choice.logprobs.tokens
            samples.append(RemoteSample(choice.index, [int(t.removeprefix("token_id:")) for t in tokens],
                                        list(choice.logprobs.token_logprobs), choice.finish_reason))
        return RemoteOutput(request_id, samples)

    def has_unfinished(self) -> bool:
        return bool(self.pending)

    def step(self, timeout_s: float = 0.05) -> list[RemoteOutput]:
        """The requests that finished since the last call (waiting briefly for one)."""
        done, _ = wait(list(self.pending.values()), timeout=timeout_s, return_when="FIRST_COMPLETED")
        finished = [rid for rid, f in self.pending.items() if f in done]
        return [self.pending.pop(rid).result() for rid in finished]

    def abort(self, request_id: str) -> bool:
        future = self.pending.pop(request_id, None)
        if future is None:
            return False
        future.cancel()  # a request already on the wire runs to its end; its result is dropped
        return True

    def sync_weights(self, checkpoint: Path) -> None:
        """Ask the server to load the checkpoint the trainer just wrote (`/update_weights_from_disk`)."""
        root = self.base_url.removesuffix("/v1")
        request = urllib.request.Request(f"{root}/update_weights_from_disk", method="POST",
                                         data=json.dumps({"model_path": str(checkpoint)}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=600) as response:
            body = json.loads(response.read())
        if not body.get("success"):
            raise RuntimeError(f"{root} refused the weight update: {body}")

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
