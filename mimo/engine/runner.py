"""The engine's forward pass: MiMoForCausalLM's math through the KV cache, in fewer and cheaper ops.

Decoding a small model on a CPU costs per-op and per-module overhead more than arithmetic (a profile
of mimo-2m at batch 1 had ~40% of a step outside the matmuls), so this runs the same computation as
`mimo.model` with:
- q/k/v and gate/up each as one matmul, on fused copies of those weights. The copies are rebuilt when
  any layer weight changes in place (RL trains the model the engine samples from; a server loads new
  weights into it), which `refresh` sees in the tensors' version counters. Replacing parameter
  objects instead (`module.weight = ...`) needs a new Engine. The copies cost memory: the q/k/v
  and gate/up weights are held twice;
- plain tensors instead of module calls, and tokens flattened to [N, H] rows;
- RoPE read from a table (cos/sin are elementwise in the position, so the table is exact) and applied
  in place to q and k together, with `roll` and a sign-folded sin in place of chunk/neg/cat;
- one `index_copy_` per layer for the new keys and values, at flat cache rows computed once a step;
- residual adds inside the output matmuls (`addmm`);
- no attention mask where none is needed: a prefill from position 0 is plain causal attention (right
  padding only ever follows the real tokens), and a decode step whose rows all sit at one position
  sees every stored key. One-query rows pass the query heads that share a kv head as that head's
  queries, so keys and values are never repeated for GQA.
Module and parameter names are untouched; tests compare this path with the model's own forward and
greedy outputs with `transformers`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mimo.engine.cache import KVCache
from mimo.model import DecoderLayer, MiMoForCausalLM


@dataclass
class _Weights:
    """One decoder block's weights as the runner reads them (live parameters, fused copies)."""

    input_norm: torch.Tensor
    qkv: torch.Tensor
    qkv_bias: torch.Tensor | None
    o_t: torch.Tensor  # transposed views, for addmm
    post_norm: torch.Tensor
    gate_up: torch.Tensor
    down_t: torch.Tensor

    @classmethod
    def of(cls, layer: DecoderLayer) -> _Weights:
        attn, mlp = layer.self_attn, layer.mlp
        bias = None if attn.q_proj.bias is None else torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias])
        return cls(layer.input_layernorm.weight, torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]),
                   bias, attn.o_proj.weight.t(), layer.post_attention_layernorm.weight,
                   torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]), mlp.down_proj.weight.t())


@dataclass
class Batch:
    """Where a forward's queries sit: B rows of T tokens in cache slots start..start+B-1."""

    positions: torch.Tensor  # [B, T]
    length: int  # keys to attend over: the largest position + 1
    mask: torch.Tensor | None  # [B, 1, T, length] (True = may attend); None: causal from 0 (T > 1) or all keys
    start: int = 0


class ModelRunner:
    def __init__(self, model: MiMoForCausalLM, max_len: int, num_mtp_layers: int):
        config = model.config
        self.model = model
        self.n_heads, self.n_kv_heads, self.head_dim = (
            config.num_attention_heads, config.num_key_value_heads, config.head_dim)
        self.intermediate, self.eps = config.intermediate_size, config.rms_norm_eps
        self._layers = list(model.model.layers) + list(model.model.mtp_layers)[:num_mtp_layers]
        # Inference tensors keep no version counter; they can only change inside inference_mode.
        self._sources = [t for layer in self._layers for t in layer.parameters() if not t.is_inference()]
        self._versions = [t._version for t in self._sources]
        self.weights = [_Weights.of(layer) for layer in self._layers]
        self.mtp = list(model.model.mtp_layers)[:num_mtp_layers]
        self.embed, self.norm, self.lm_head = model.model.embed_tokens.weight, model.model.norm.weight, model.lm_head.weight
        cos, sin = model.model.rotary(torch.arange(max_len, device=model.device), model.dtype)  # [L, D]
        half = self.head_dim // 2
        # rotate_half(x) * sin == roll(x, D/2) * [-sin_lo, sin_hi], bit for bit.
        self.cos, self.sin = cos, torch.cat([-sin[:, :half], sin[:, half:]], dim=-1)

    def refresh(self) -> None:
        """Rebuild the fused weights if a weight changed in place (an optimizer step, a weight load)."""
        versions = [t._version for t in self._sources]
        if versions != self._versions:
            self.weights, self._versions = [_Weights.of(layer) for layer in self._layers], versions

    # ---- forward pieces -------------------------------------------------------------------------

    def _norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        # torch's rms_norm is RMSNorm.forward's math (normalise in fp32, cast back, then scale).
        return F.rms_norm(x, weight.shape, weight, self.eps)

    def _block(self, x: torch.Tensor, w: _Weights, cache: KVCache, layer: int, rows: torch.Tensor,
               cos: torch.Tensor, sin: torch.Tensor, batch: Batch) -> torch.Tensor:
        """One decoder block over tokens x [N, H]; writes their keys/values into the cache."""
        (B, T), N = batch.positions.shape, x.shape[0]
        Hq, Hk, D = self.n_heads, self.n_kv_heads, self.head_dim
        qkv = F.linear(self._norm(x, w.input_norm), w.qkv, w.qkv_bias).view(N, -1, D)
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
        x = torch.addmm(x, y.reshape(N, Hq * D), w.o_t)  # the residual add inside the matmul
        gate, up = F.linear(self._norm(x, w.post_norm), w.gate_up).split(self.intermediate, dim=-1)
        return torch.addmm(x, F.silu(gate) * up, w.down_t)

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
        x = F.linear(x, layer.input_proj.weight)
        first = len(self.weights) - len(self.mtp)
        return self._blocks(x, range(first, first + 1), cache, batch)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(self._norm(hidden, self.norm), self.lm_head).float()

    def mtp_logits(self, state: torch.Tensor) -> torch.Tensor:
        return F.linear(self._norm(state, self.mtp[0].final_layernorm.weight), self.lm_head).float()
