"""The inference engine: KV-cached prefill/decode, continuous batching, sampling, MTP speculation.

One `step()` is one scheduling round:
1. every running sequence advances: plain decoding feeds its last token; with speculation the MTP
   layer first drafts up to k tokens, and the main model scores [last, draft_1..draft_m] in one
   forward, keeping the longest accepted prefix plus one token of its own;
2. waiting requests are admitted while slots are free and the prefill token budget lasts; a prompt is
   prefilled once and its cache copied to the request's other n-1 samples (prefix sharing), and the
   prefill already yields each sample's first token;
3. finished sequences release their slot at once.
Requests therefore join and leave between steps, and no sequence waits for the longest one. The
forward passes themselves run in mimo/engine/runner.py (the model's math in fewer, cheaper ops).

Speculation (mimo-spec.md section 3). MTP layer 0 at position t reads the trunk's pre-norm h_t and
embed(x_{t+1}) and predicts x_{t+2}. After a step that left the trunk's hidden states for positions
t0..t1, the drafter first catches its own KV cache up over those positions (the last one predicts the
first draft), then reuses layer 0 for further drafts, feeding back its own pre-norm output in place
of the trunk's state (as vLLM does with MiMo's single published layer). Drafting stops early for a
sequence whose drafter confidence (max probability) falls below `draft_confidence`, because a deep
draft that is usually rejected costs more than it saves (anchors.md pain point 13). Verification is
standard speculative sampling (Leviathan et al. 2023): accept draft d with probability
min(1, p(d)/q(d)), on rejection sample from max(0, p - q); greedy requests accept exactly when d is
the target's argmax. Either way the output distribution is that of plain decoding.
"""

from __future__ import annotations

import itertools
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch.nn.utils.rnn import pad_sequence

from mimo.engine.cache import KVCache, attention_mask
from mimo.engine.runner import Batch, ModelRunner
from mimo.engine.sampling import SamplingParams, exponential_noise, process_logits, sample_from
from mimo.model import MiMoForCausalLM


@dataclass
class Sample:
    """One generated continuation. logprobs[i]: log-prob of token i under the distribution it was drawn
    from (0.0 for greedy, a point mass); raw_logprobs[i]: under the model's plain softmax."""

    index: int
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    raw_logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[dict[int, float]] | None = None  # when SamplingParams.logprobs is set
    text: str = ""  # detokenised output (engines built with a tokenizer), cut before a stop string
    finish_reason: str | None = None  # "stop" | "length" | "abort"


@dataclass
class RequestOutput:
    request_id: str
    prompt_token_ids: list[int]
    samples: list[Sample]

    @property
    def finished(self) -> bool:
        return all(s.finish_reason is not None for s in self.samples)


class _Detokenizer:
    """Incremental decoding that never emits half a UTF-8 character (vLLM's prefix/read offsets)."""

    def __init__(self, decode: Callable[[list[int]], str]):
        self.decode, self.prefix_offset, self.read_offset = decode, 0, 0

    def delta(self, ids: list[int]) -> str:
        prefix = self.decode(ids[self.prefix_offset:self.read_offset])
        full = self.decode(ids[self.prefix_offset:])
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            self.prefix_offset, self.read_offset = self.read_offset, len(ids)
            return full[len(prefix):]
        return ""

    def flush(self, ids: list[int]) -> str:
        """Whatever is still held back (a trailing partial character) once the output has ended."""
        return self.decode(ids[self.prefix_offset:])[len(self.decode(ids[self.prefix_offset:self.read_offset])):]


@dataclass(eq=False)
class _Sequence:
    request: "_Request"
    sample: Sample
    tokens: list[int]  # prompt + generated
    generator: torch.Generator | None
    slot: int = -1
    detokenizer: _Detokenizer | None = None
    # Drafter state: MTP KV is valid for positions < mtp_len; `pending` holds the trunk's hidden states
    # for positions mtp_len.. that the drafter has not consumed yet.
    mtp_len: int = 0
    pending: torch.Tensor | None = None

    @property
    def params(self) -> SamplingParams:
        return self.request.params

    @property
    def finished(self) -> bool:
        return self.sample.finish_reason is not None


@dataclass(eq=False)
class _Request:
    request_id: str
    prompt: list[int]
    params: SamplingParams
    output: RequestOutput
    arrival: float
    seqs: list[_Sequence] = field(default_factory=list)


@dataclass
class EngineStats:
    prompt_tokens: int = 0
    generation_tokens: int = 0
    finished_requests: int = 0
    steps: int = 0
    draft_proposed: list[int] = field(default_factory=list)  # per draft position
    draft_accepted: list[int] = field(default_factory=list)

    @property
    def acceptance_rate(self) -> list[float]:
        return [a / p if p else 0.0 for a, p in zip(self.draft_accepted, self.draft_proposed)]


class Engine:
    def __init__(self, model: MiMoForCausalLM, tokenizer=None, max_batch_size: int = 32,
                 max_seq_len: int | None = None, max_batched_tokens: int = 4096,
                 num_speculative_tokens: int = 0, draft_confidence: float = 0.3,
                 eos_token_ids: Sequence[int] | None = None, seed: int | None = None, prepack: bool = True):
        """model: a MiMoForCausalLM (eval mode is set here). tokenizer: needed for stop strings and
        `Sample.text`. max_seq_len: context length (prompt + output), default the model's, capped at 4096.
        max_batched_tokens: prefill token budget per step. num_speculative_tokens: MTP draft depth k
        (0 = plain decoding). eos_token_ids: default the config's plus the tokenizer's stop tokens.
        prepack: run the projections on oneDNN-prepacked copies of their weights (CPU; faster, but the
        copies double the projection weights' memory; see mimo/engine/runner.py)."""
        config = model.config
        if num_speculative_tokens and not config.num_nextn_predict_layers:
            raise ValueError("speculative decoding needs MTP layers; this model has none")
        self.model = model.eval()
        self.device = model.device
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.max_seq_len = max_seq_len or min(config.max_position_embeddings, 4096)
        self.max_batched_tokens = max_batched_tokens
        self.k = num_speculative_tokens
        self.draft_confidence = draft_confidence
        if eos_token_ids is None:
            eos_token_ids = list(config.eos_token_ids)
            if tokenizer is not None:
                eos_token_ids += getattr(tokenizer, "stop_token_ids", [tokenizer.eos_token_id])
        self.eos_token_ids = {t for t in eos_token_ids if t is not None}
        # Padded query positions of a batched step may reach k + 1 past the last real one.
        cache_len = self.max_seq_len + self.k + 2
        shape = (max_batch_size, config.num_key_value_heads, config.head_dim, cache_len, model.dtype, model.device)
        self.cache = KVCache(config.num_hidden_layers, *shape)
        self.mtp_cache = KVCache(1, *shape) if self.k else None
        self.runner = ModelRunner(model, cache_len, num_mtp_layers=1 if self.k else 0, prepack=prepack)
        self.waiting: deque[_Request] = deque()
        self.running: list[_Sequence] = []  # running[i].slot == i
        self.requests: dict[str, _Request] = {}
        self.stats = EngineStats(draft_proposed=[0] * self.k, draft_accepted=[0] * self.k)
        self._ids = itertools.count()
        self._generator = torch.Generator(device=model.device)
        self._generator.manual_seed(seed if seed is not None else random.randrange(2**62))

    # ---- requests ---------------------------------------------------------------------------

    def check_request(self, prompt: list[int], params: SamplingParams) -> None:
        """Raise ValueError for a request the engine cannot serve (safe to call from any thread)."""
        if not prompt:
            raise ValueError("the prompt is empty")
        if len(prompt) >= self.max_seq_len:
            raise ValueError(f"the prompt has {len(prompt)} tokens; this model's context is {self.max_seq_len} "
                             "tokens, including at least one generated token")
        vocab = self.model.config.vocab_size
        if any(not 0 <= t < vocab for t in prompt):
            raise ValueError(f"prompt token ids must be in [0, {vocab})")
        if params.n > self.max_batch_size:
            raise ValueError(f"n={params.n} is more than max_batch_size={self.max_batch_size}")
        if params.stop and self.tokenizer is None:
            raise ValueError("stop strings need an engine built with a tokenizer")

    def add_request(self, prompt: list[int], params: SamplingParams | None = None,
                    request_id: str | None = None) -> str:
        params = params or SamplingParams()
        self.check_request(prompt, params)
        request_id = request_id if request_id is not None else f"req-{next(self._ids)}"
        if request_id in self.requests:
            raise ValueError(f"request id {request_id!r} is already in use")
        request = _Request(request_id, list(prompt), params,
                           RequestOutput(request_id, list(prompt), [Sample(j) for j in range(params.n)]),
                           time.monotonic())
        for j, sample in enumerate(request.output.samples):
            if params.logprobs is not None:
                sample.top_logprobs = []
            generator = None
            if params.seed is not None:
                generator = torch.Generator(device=self.device)
                generator.manual_seed(params.seed + j)
            detok = _Detokenizer(self.tokenizer.decode) if self.tokenizer is not None else None
            request.seqs.append(_Sequence(request, sample, list(prompt), generator, detokenizer=detok))
        self.requests[request_id] = request
        self.waiting.append(request)
        return request_id

    def abort(self, request_id: str) -> bool:
        """Stop a request now and free its cache; False if it is unknown or already finished."""
        request = self.requests.pop(request_id, None)
        if request is None:
            return False
        if request in self.waiting:
            self.waiting.remove(request)
        for seq in request.seqs:
            if not seq.finished:
                seq.sample.finish_reason = "abort"
        self._release([s for s in request.seqs if s.slot >= 0])
        return True

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    def generate(self, prompts: list[list[int]], params: SamplingParams | list[SamplingParams] | None = None,
                 ) -> list[RequestOutput]:
        """Run prompts to completion with continuous batching; outputs in prompt order."""
        params = params or SamplingParams()
        params = params if isinstance(params, list) else [params] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(params)} SamplingParams")
        ids = [self.add_request(p, sp) for p, sp in zip(prompts, params)]
        outputs = {}
        while self.has_unfinished():
            for out in self.step():
                if out.finished:
                    outputs[out.request_id] = out
        return [outputs[i] for i in ids]

    # ---- one scheduling round ---------------------------------------------------------------

    @torch.inference_mode()
    def step(self) -> list[RequestOutput]:
        """Advance every running sequence by one round and admit waiting requests. Returns the outputs
        of the requests that changed; finished requests are dropped from the engine."""
        touched: dict[str, _Request] = {}
        self.runner.refresh()
        if self.running:
            self._decode(self.running)
            touched.update((s.request.request_id, s.request) for s in self.running)
        admitted = self._admit()
        if admitted:
            self._prefill(admitted)
            touched.update((r.request_id, r) for r in admitted)
        self._release([s for s in self.running if s.finished])
        self.stats.steps += 1
        for request in touched.values():
            if request.output.finished and self.requests.pop(request.request_id, None) is not None:
                self.stats.finished_requests += 1
        return [r.output for r in touched.values()]

    def _admit(self) -> list[_Request]:
        admitted, budget = [], self.max_batched_tokens
        free = self.max_batch_size - len(self.running)
        while self.waiting and self.waiting[0].params.n <= free:
            request = self.waiting[0]
            if admitted and len(request.prompt) > budget:
                break  # the first request is always admitted, however long, so none starves
            self.waiting.popleft()
            admitted.append(request)
            free -= request.params.n
            budget -= len(request.prompt)
        return admitted

    def _release(self, seqs: list[_Sequence]) -> None:
        """Free slots, keeping running sequences compact in slots 0..B-1."""
        for seq in sorted(seqs, key=lambda s: s.slot, reverse=True):
            last = self.running.pop()
            if last is not seq:
                self.cache.copy(last.slot, seq.slot, len(last.tokens))
                if self.mtp_cache is not None:
                    self.mtp_cache.copy(last.slot, seq.slot, last.mtp_len)
                last.slot = seq.slot
                self.running[seq.slot] = last
            seq.slot, seq.pending = -1, None

    # ---- model calls ------------------------------------------------------------------------

    def _trunk(self, input_ids: torch.Tensor, first: list[int], start: int) -> torch.Tensor:
        """Main-model forward for slots start..start+B-1, row b at positions first[b].. -> pre-norm hidden."""
        batch = _layout(first, input_ids.shape[1], input_ids.device, start)
        return self.runner.trunk(self.cache, input_ids, batch).view(*input_ids.shape, -1)

    def _prefill(self, requests: list[_Request]) -> None:
        start = len(self.running)
        # First samples take contiguous slots so one batched forward prefills them all.
        self.running.extend(r.seqs[0] for r in requests)
        self.running.extend(s for r in requests for s in r.seqs[1:])
        for i in range(start, len(self.running)):
            self.running[i].slot = i

        lengths = [len(r.prompt) for r in requests]
        T = max(lengths)
        device = self.device
        input_ids = torch.tensor([r.prompt + [0] * (T - len(r.prompt)) for r in requests], device=device)
        hidden = self._trunk(input_ids, [0] * len(requests), start)
        last = hidden[torch.arange(len(requests)), torch.tensor(lengths) - 1]
        logits = self.runner.logits(last)
        rows = [i for i, r in enumerate(requests) for _ in r.seqs]
        seqs = [s for r in requests for s in r.seqs]
        for r, length in zip(requests, lengths):  # prefix sharing: copy the prompt's cache to samples 1..n-1
            for seq in r.seqs[1:]:
                self.cache.copy(r.seqs[0].slot, seq.slot, length)
            self.stats.prompt_tokens += length
        tokens, logprobs, raw, top = self._choose(logits[rows], [s.params for s in seqs], [s.generator for s in seqs])
        for i, seq in enumerate(seqs):
            if self.k:
                seq.pending = hidden[rows[i], :lengths[rows[i]]]
            self._emit(seq, tokens[i], logprobs[i], raw[i], top[i] if top else None)

    def _choose(self, logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator | None]):
        """Pick one token per row -> (tokens, sampling log-probs, raw log-probs, top log-probs or None)."""
        raw = logits.log_softmax(-1)
        chosen = logits.argmax(-1)
        if all(p.greedy for p in params):
            sampled_lp = [0.0] * len(params)
        else:
            scaled = process_logits(logits, params)
            greedy = torch.tensor([p.greedy for p in params], device=logits.device)
            noise = exponential_noise(generators, logits.shape[-1], logits.device, self._generator)
            chosen = torch.where(greedy, chosen, sample_from(scaled.softmax(-1), noise))
            sampled_lp = scaled.log_softmax(-1).gather(-1, chosen[:, None])[:, 0].masked_fill(greedy, 0.0).tolist()
        return (chosen.tolist(), sampled_lp, raw.gather(-1, chosen[:, None])[:, 0].tolist(),
                self._top_logprobs(raw, params))

    @staticmethod
    def _top_logprobs(raw: torch.Tensor, params: list[SamplingParams]) -> list[dict[int, float]] | None:
        n = max((p.logprobs or 0) for p in params)
        if not n:
            return None
        values, indices = raw.topk(n, dim=-1)
        return [dict(zip(i[:p.logprobs or 0], v[:p.logprobs or 0]))
                for i, v, p in zip(indices.tolist(), values.tolist(), params)]

    # ---- decoding ---------------------------------------------------------------------------

    def _draft_budget(self, seq: _Sequence) -> int:
        """Drafts worth proposing: the step emits accepted drafts + 1, within max_tokens and context."""
        left = min(seq.params.max_tokens - len(seq.sample.token_ids), self.max_seq_len - len(seq.tokens))
        return max(0, min(self.k, left - 1))

    def _decode(self, seqs: list[_Sequence]) -> None:
        B, device = len(seqs), self.device
        drafts, draft_probs = self._draft(seqs) if self.k else ([[] for _ in seqs], [None] * B)
        M = max(len(d) for d in drafts)
        input_ids = torch.tensor([[s.tokens[-1]] + d + [0] * (M - len(d)) for s, d in zip(seqs, drafts)],
                                 device=device)
        hidden = self._trunk(input_ids, [len(s.tokens) - 1 for s in seqs], 0)
        if M == 0:  # plain decoding (or nothing worth drafting): one batched choice
            logits = self.runner.logits(hidden[:, 0])
            tokens, lp, raw, top = self._choose(logits, [s.params for s in seqs], [s.generator for s in seqs])
            for i, seq in enumerate(seqs):
                self._emit(seq, tokens[i], lp[i], raw[i], top[i] if top else None)
                if self.k:
                    seq.pending = hidden[i, :1]
            return
        rows = [(b, t) for b, d in enumerate(drafts) for t in range(len(d) + 1)]
        flat = hidden[torch.tensor([r[0] for r in rows]), torch.tensor([r[1] for r in rows])]
        logits = self.runner.logits(flat)
        raw, target = logits.log_softmax(-1), logits.argmax(-1).tolist()
        offset = 0
        for b, seq in enumerate(seqs):
            m = len(drafts[b])
            kept = slice(offset, offset + m + 1)
            accepted = self._verify(seq, drafts[b], draft_probs[b], logits[kept], raw[kept], target[kept])
            seq.pending = hidden[b, :accepted + 1]
            offset += m + 1

    def _verify(self, seq: _Sequence, draft: list[int], q: torch.Tensor | None, logits: torch.Tensor,
                raw: torch.Tensor, target: list[int]) -> int:
        """Speculative sampling over one sequence's m drafts and m + 1 target rows (logits, their raw
        log-probs and argmaxes); emits the kept tokens and returns how many drafts were accepted."""
        params = seq.params
        m = len(draft)
        top = self._top_logprobs(raw, [params] * (m + 1))
        greedy = params.greedy
        log_p = None if greedy else process_logits(logits, [params] * (m + 1)).log_softmax(-1)
        for j in range(m + 1):
            if j < m:
                d = draft[j]
                if greedy:
                    ok = target[j] == d
                else:
                    p_d, q_d = log_p[j, d].exp(), q[j, d]
                    u = torch.rand((), generator=seq.generator or self._generator, device=logits.device)
                    ok = bool(u * q_d < p_d)
                self.stats.draft_proposed[j] += 1
                self.stats.draft_accepted[j] += ok
                if ok:
                    token = d
                elif greedy:
                    token = target[j]
                else:  # resample from the residual max(0, p - q)
                    residual = (log_p[j].exp() - q[j]).clamp(min=0)
                    total = residual.sum()
                    token = self._sample_row(residual / total if total > 0 else log_p[j].exp(), seq)
            else:
                ok = False
                token = target[j] if greedy else self._sample_row(log_p[j].exp(), seq)
            lp = 0.0 if greedy else float(log_p[j, token])
            finished = self._emit(seq, token, lp, float(raw[j, token]), top[j] if top else None)
            if not ok or finished:
                return j

    def _sample_row(self, probs: torch.Tensor, seq: _Sequence) -> int:
        noise = exponential_noise([seq.generator], probs.shape[-1], probs.device, self._generator)
        return int(sample_from(probs[None], noise)[0])

    def _draft(self, seqs: list[_Sequence]) -> tuple[list[list[int]], list[torch.Tensor | None]]:
        """Propose up to k tokens per sequence with MTP layer 0 -> (drafts, the draft distributions q
        [m, V] of sampled requests, None for greedy ones)."""
        device = self.device
        B = len(seqs)
        # Catch the drafter's cache up over the positions the last step added; the last one drafts.
        counts = [s.pending.shape[0] for s in seqs]
        T = max(counts)
        hidden = pad_sequence([s.pending for s in seqs], batch_first=True)  # [B, T, H]
        future = torch.tensor([s.tokens[s.mtp_len + 1:] + [0] * (T - n) for s, n in zip(seqs, counts)], device=device)
        out = self._mtp(hidden, future, [s.mtp_len for s in seqs])
        state = out[torch.arange(B), torch.tensor(counts) - 1][:, None]  # [B, 1, H]
        for s in seqs:
            s.mtp_len, s.pending = len(s.tokens) - 1, None

        budgets = [self._draft_budget(s) for s in seqs]
        drafts: list[list[int]] = [[] for _ in seqs]
        qs: list[list[torch.Tensor]] = [[] for _ in seqs]
        active = [b > 0 for b in budgets]
        params = [s.params for s in seqs]
        all_greedy = all(p.greedy for p in params)
        for j in range(max(budgets, default=0)):
            if j:  # reuse layer 0: its own output stands in for the trunk's state one position on
                last = torch.tensor([d[-1] if d else 0 for d in drafts], device=device)[:, None]
                state = self._mtp(state, last, [len(s.tokens) - 1 + j - 1 for s in seqs])
            logits = self.runner.mtp_logits(state[:, 0])
            confidence = logits.softmax(-1).amax(-1).tolist()
            tokens = logits.argmax(-1)
            probs = None  # the draft distribution q, kept for sampled rows' verification
            if not all_greedy:
                probs = process_logits(logits, params).softmax(-1)
                greedy = torch.tensor([p.greedy for p in params], device=device)
                noise = exponential_noise([s.generator for s in seqs], logits.shape[-1], device, self._generator)
                tokens = torch.where(greedy, tokens, sample_from(probs, noise))
            for b, tok in enumerate(tokens.tolist()):
                if not active[b]:
                    continue
                if j and confidence[b] < self.draft_confidence:
                    active[b] = False
                    continue
                drafts[b].append(tok)
                if probs is not None:
                    qs[b].append(probs[b])
                active[b] = len(drafts[b]) < budgets[b]
            if not any(active):
                break
        q = [torch.stack(qb) if qb and not s.params.greedy else None for qb, s in zip(qs, seqs)]
        return drafts, q

    def _mtp(self, hidden: torch.Tensor, next_ids: torch.Tensor, first: list[int]) -> torch.Tensor:
        batch = _layout(first, hidden.shape[1], hidden.device)
        return self.runner.mtp_block(self.mtp_cache, hidden.reshape(-1, hidden.shape[-1]), next_ids, batch
                                     ).view(hidden.shape)

    # ---- output -----------------------------------------------------------------------------

    def _emit(self, seq: _Sequence, token: int, logprob: float, raw_logprob: float,
              top: dict[int, float] | None) -> bool:
        """Append one token, apply the stop rules; returns True once the sequence is finished."""
        sample, params = seq.sample, seq.params
        seq.tokens.append(token)
        sample.token_ids.append(token)
        sample.logprobs.append(logprob)
        sample.raw_logprobs.append(raw_logprob)
        if sample.top_logprobs is not None:
            sample.top_logprobs.append(top or {})
        self.stats.generation_tokens += 1
        stop_token = token in params.stop_token_ids or (token in self.eos_token_ids and not params.ignore_eos)
        detok = seq.detokenizer
        if detok is not None and stop_token:  # the stop token itself is not part of the text
            sample.text += detok.flush(sample.token_ids[:-1])
        elif detok is not None:
            old = len(sample.text)
            sample.text += detok.delta(sample.token_ids)
            hits = [at for stop in params.stop if (at := sample.text.find(stop, max(0, old - len(stop) + 1))) >= 0]
            if hits:
                sample.text = sample.text[:min(hits)]
                stop_token = True
        if stop_token:
            sample.finish_reason = "stop"
        elif len(sample.token_ids) >= params.max_tokens or len(seq.tokens) >= self.max_seq_len:
            sample.finish_reason = "length"
            if detok is not None:
                sample.text += detok.flush(sample.token_ids)
        return sample.finish_reason is not None


def _layout(first: list[int], T: int, device: torch.device, start: int = 0) -> Batch:
    """Rows of T queries starting at positions first[b], in slots start.. -> their Batch. No mask where
    attention needs none: every row at one position (T = 1: all stored keys), or every row starting at
    0 (plain causal; right padding only follows the real tokens)."""
    positions = torch.tensor(first, device=device)[:, None]
    if T > 1:
        positions = positions + torch.arange(T, device=device)
    length = max(first) + T
    uniform = all(f == first[0] for f in first) and (T == 1 or first[0] == 0)
    return Batch(positions, length, None if uniform else attention_mask(positions, length), start)
