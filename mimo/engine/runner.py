"""The engine's forward pass: MiMoForCausalLM's math through the KV cache, in fewer and cheaper ops.

Decoding a small model on a CPU costs per-op and per-module overhead more than arithmetic (a profile
of mimo-2m at batch 1 had ~40% of a step outside the matmuls), so this runs the same computation as
`mimo.model` with:
- q/k/v and gate/up each as one matmul, on weight copies prepacked once for oneDNN (CPU; bf16 all,
  fp32 from 1 MiB up). `F.linear` re-lays out its weight for the GEMM kernel on every call, which on a
  CPU costs as much as the multiply itself at decode sizes (benchmarks/README.md: 1.2-2.1x faster
  matmuls at 32 rows on such weights). The copies are rebuilt when any weight changes in place (RL
  trains the model the engine samples from; a server loads new weights into it), which `refresh` sees
  in the tensors' version counters; replacing parameter objects (`module.weight = ...`) needs a new
  Engine. They hold those weights twice, so where prepacking is off (`prepack=False`, no oneDNN CPU,
  or copies that would take more than half of the free memory) the projections run one by one on
  the model's own weights and the engine adds no weight memory;
- plain tensors instead of module calls, and tokens flattened to [N, H] rows;
- RoPE read from a table (cos/sin are elementwise in the position, so the table is exact) and applied
  in place to q and k together, with `roll` and a sign-folded sin in place of chunk/neg/cat;
- one `index_copy_` per layer for the new keys and values, at flat cache rows computed once a step;
- residual adds inside the output projections' kernels;
- no attention mask where none is needed: a prefill from position 0 is plain causal attention (right
  padding only ever follows the real tokens), and a decode step whose rows all sit at one position
  sees every stored key. One-query rows pass the query heads that share a kv head as that head's
  queries, so keys and values are never repeated for GQA.
Module and parameter names are untouched; tests compare this path with the model's own forward and
greedy outputs with `transformers`.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mimo.engine.cache import KVCache
from mimo.model import DecoderLayer, MiMoForCausalLM


log = logging.getLogger(__name__)


def available_memory() -> int | None:
    """Bytes of memory the kernel could hand out now (Linux MemAvailable), None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return None


@functools.cache
def can_prepack(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether oneDNN's prepacked linear runs here: CPU with oneDNN, fp32, or bf16 where the CPU has it
    (tried once on a tiny weight, since builds for other CPUs may lack the ops)."""
    if device.type != "cpu" or not torch.backends.mkldnn.is_available() or dtype not in (torch.float32, torch.bfloat16):
        return False
    try:
        if dtype == torch.bfloat16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
        weight = torch.ops.mkldnn._reorder_linear_weight(torch.ones(2, 2, dtype=dtype), 1)
        y = torch.ops.mkldnn._linear_pointwise(torch.ones(1, 2, dtype=dtype), weight, None, "none", [], "")
        return bool((y == 2).all())
    except (RuntimeError, AttributeError):
        return False


class _Linear:
    """Projections of one input as one matmul, x @ [W1; W2; ...].T (+ biases) (+ a residual added in the
    same kernel). With `copies`, the weights are concatenated and, where it pays, prepacked for oneDNN;
    without, the model's own weights run one by one (no extra memory, a little slower)."""

    # oneDNN picks the packed layout for this many rows; measured best from 1 to 64 rows at decode sizes.
    PACK_ROWS = 32
    # In fp32 a oneDNN call costs ~10 us more than F.linear's (MKL); below ~1 MiB of weight (which then
    # stays in cache on small models) that is more than the re-layout it saves (benchmarks/README.md,
    # per shape). bf16 F.linear runs on oneDNN anyway, so packing only saves there.
    PACK_MIN_BYTES = 1 << 20

    def __init__(self, layers: list[nn.Linear], copies: bool):
        weights = [layer.weight for layer in layers]
        biases = None if layers[0].bias is None else [layer.bias for layer in layers]
        self.parts = None if copies or len(layers) == 1 else list(zip(weights, biases or [None] * len(layers)))
        self.prepacked = False
        if self.parts is not None:
            return
        weight = torch.cat(weights) if len(weights) > 1 else weights[0]
        self.bias = None if biases is None else torch.cat(biases) if len(biases) > 1 else biases[0]
        self.prepacked = copies and (weight.dtype == torch.bfloat16 or weight.nbytes >= self.PACK_MIN_BYTES)
        self.weight = torch.ops.mkldnn._reorder_linear_weight(weight, self.PACK_ROWS) if self.prepacked else weight

    def __call__(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if self.parts is not None:
            return torch.cat([F.linear(x, w, b) for w, b in self.parts], dim=-1)
        if self.prepacked:
            if residual is None:
                return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")
            return torch.ops.mkldnn._linear_pointwise.binary(x, residual, self.weight, self.bias, "add")
        if residual is None:
            return F.linear(x, self.weight, self.bias)
        return torch.addmm(residual, x, self.weight.t())  # residual projections have no bias


@dataclass
class _Weights:
    """One decoder block's weights as the runner reads them (live norm weights, fused projections)."""

    input_norm: torch.Tensor
    qkv: _Linear
    o: _Linear
    post_norm: torch.Tensor
    gate_up: _Linear
    down: _Linear

    @classmethod
    def of(cls, layer: DecoderLayer, copies: bool) -> _Weights:
        attn, mlp = layer.self_attn, layer.mlp
        return cls(layer.input_layernorm.weight, _Linear([attn.q_proj, attn.k_proj, attn.v_proj], copies),
                   _Linear([attn.o_proj], copies), layer.post_attention_layernorm.weight,
                   _Linear([mlp.gate_proj, mlp.up_proj], copies), _Linear([mlp.down_proj], copies))


@dataclass
class Batch:
    """Where a forward's queries sit: B rows of T tokens in cache slots start..start+B-1."""

    positions: torch.Tensor  # [B, T]
    length: int  # keys to attend over: the largest position + 1
    mask: torch.Tensor | None  # [B, 1, T, length] (True = may attend); None: causal from 0 (T > 1) or all keys
    start: int = 0


class ModelRunner:
    def __init__(self, model: MiMoForCausalLM, max_len: int, num_mtp_layers: int, prepack: bool = True):
        config = model.config
        self.prepack = prepack and can_prepack(model.device, model.dtype)
        self.model = model
        self.n_heads, self.n_kv_heads, self.head_dim = (
            config.num_attention_heads, config.num_key_value_heads, config.head_dim)
        self.intermediate, self.eps = config.intermediate_size, config.rms_norm_eps
        self._layers = list(model.model.layers) + list(model.model.mtp_layers)[:num_mtp_layers]
        tracked = [model.lm_head, *self._layers]
        # Inference tensors keep no version counter; they can only change inside inference_mode.
        self._sources = [t for module in tracked for t in module.parameters() if not t.is_inference()]
        self._versions = [t._version for t in self._sources]
        copies = sum(t.nbytes for m in tracked for t in m.parameters() if t.dim() == 2)  # at most this is packed
        free = available_memory()
        if self.prepack and free is not None and 2 * copies > free:
            log.warning("not prepacking the engine's weights: the %.1f GB of copies would leave too little of "
                        "the %.1f GB of free memory; running on the model's own weights", copies / 1e9, free / 1e9)
            self.prepack = False
        self.mtp = list(model.model.mtp_layers)[:num_mtp_layers]
        self.embed, self.norm = model.model.embed_tokens.weight, model.model.norm.weight
        self._pack()
        cos, sin = model.model.rotary(torch.arange(max_len, device=model.device), model.dtype)  # [L, D]
        half = self.head_dim // 2
        # rotate_half(x) * sin == roll(x, D/2) * [-sin_lo, sin_hi], bit for bit.
        self.cos, self.sin = cos, torch.cat([-sin[:, :half], sin[:, half:]], dim=-1)

    def _pack(self) -> None:
        self.weights = self.lm_head = self.mtp_input = None  # drop old copies first: one set at a time in memory
        self.weights = [_Weights.of(layer, self.prepack) for layer in self._layers]
        self.lm_head = _Linear([self.model.lm_head], self.prepack)
        self.mtp_input = [_Linear([layer.input_proj], self.prepack) for layer in self.mtp]

    def refresh(self) -> None:
        """Rebuild the packed weights if a weight changed in place (an optimizer step, a weight load)."""
        versions = [t._version for t in self._sources]
        if versions != self._versions:
            self._pack()
            self._versions = versions

    # ---- forward pieces -------------------------------------------------------------------------

    def _norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        # torch's rms_norm is RMSNorm.forward's math (normalise in fp32, cast back, then scale).
        return F.rms_norm(x, weight.shape, weight, self.eps)

    def _block(self, x: torch.Tensor, w: _Weights, cache: KVCache, layer: int, rows: torch.Tensor,
               cos: torch.Tensor, sin: torch.Tensor, batch: Batch) -> torch.Tensor:
        """One decoder block over tokens x [N, H]; writes their keys/values into the cache."""
        (B, T), N = batch.positions.shape, x.shape[0]
        Hq, Hk, D = self.n_heads, self.n_kv_heads, self.head_dim
        qkv = w.qkv(self._norm(x, w.input_norm)).view(N, -1, D)
        qk = qkv[:, :Hq + Hk]
        rolled = qk.roll(D // 2, dims=-1)
        qk.mul_(cos).addcmul_(rolled, sin)  # RoPE in place: q, k, v stay side by side for the cache
        cache.write(layer, rows, qkv[:, Hq:])
        k, v = cache.read(layer, batch.start, B, batch.length)
        if T == 1:
            # The query heads that share a kv head go in as that head's T = group queries (q head h reads
            # kv head h // group, as enable_gqa does), so keys and values are never repeated.
            y = F.scaled_dot_product_attention(qk[:, :Hq].view(B, Hk, Hq // Hk, D), k, v, attn_mask=batch.mask)
        else:
            y = F.scaled_dot_product_attention(qk[:, :Hq].view(B, T, Hq, D).transpose(1, 2), k, v,
                                               attn_mask=batch.mask, is_causal=batch.mask is None,
                                               enable_gqa=True).transpose(1, 2)
        x = w.o(y.reshape(N, Hq * D), residual=x)  # the residual add inside the matmul
        gate, up = w.gate_up(self._norm(x, w.post_norm)).split(self.intermediate, dim=-1)
        return w.down(F.silu(gate) * up, residual=x)

    def _blocks(self, x: torch.Tensor, layers: range, cache: KVCache, batch: Batch) -> torch.Tensor:
        cache.reserve(batch.length)
        rows = cache.rows(batch.start, batch.positions)
        positions = batch.positions.reshape(-1)
        cos, sin = self.cos[positions][:, None], self.sin[positions][:, None]  # [N, 1, D]
        for i, layer in enumerate(layers):
            x = self._block(x, self.weights[layer], cache, i, rows, cos, sin, batch)
        return x

    def trunk(self, cache: KVCache, input_ids: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Main-model forward of input_ids [B, T] -> pre-norm hidden states [B * T, H]."""
        x = F.embedding(input_ids.reshape(-1), self.embed)
        return self._blocks(x, range(len(self.weights) - len(self.mtp)), cache, batch)

    def mtp_block(self, cache: KVCache, hidden: torch.Tensor, next_ids: torch.Tensor, batch: Batch) -> torch.Tensor:
        """MTP layer 0 before its final norm (`MTPLayer.block`): hidden [N, H], next_ids [B, T] -> [N, H]."""
        layer = self.mtp[0]
        x = torch.cat([self._norm(hidden, layer.hidden_layernorm.weight),
                       self._norm(F.embedding(next_ids.reshape(-1), self.embed), layer.token_layernorm.weight)], dim=-1)
        x = self.mtp_input[0](x)
        first = len(self.weights) - len(self.mtp)
        return self._blocks(x, range(first, first + 1), cache, batch)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self._norm(hidden, self.norm)).float()

    def mtp_logits(self, state: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self._norm(state, self.mtp[0].final_layernorm.weight)).float()
