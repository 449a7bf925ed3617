"""The engine's forward pass: MiMoForCausalLM's math through the KV cache, in fewer and larger ops.

Decoding a small model on a CPU costs per-op and per-module overhead far more than arithmetic (a
profile of mimo-2m at batch 1 had ~40% of a step outside the matmuls), so this runs the same
computation as `mimo.model` with:
- q/k/v and gate/up each as one matmul, on fused copies of the weights. The copies are rebuilt when
  a source weight changes (RL trains the model the engine samples from), which `refresh` detects
  from the tensors' version counters;
- RoPE read from a table (cos/sin are elementwise in the position, so the table is exact) and
  applied to q and k together, with `roll` and a sign-folded sin in place of chunk/neg/cat;
- torch's fused `rms_norm` (in fp32, then cast and scaled, exactly as the model's RMSNorm);
- no attention mask where none is needed: a prefill from position 0 is plain causal attention
  (right padding only ever follows the real tokens), and a decode step where every row sits at the
  same position sees all stored keys. Only mixed-length decode and draft verification build one.
Parameter names and the model itself are untouched; tests compare this path with the model's full
forward and greedy outputs with `transformers`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mimo.engine.cache import KVCache
from mimo.model import DecoderLayer, MiMoForCausalLM, MTPLayer


@dataclass
class _Fused:
    qkv: torch.Tensor
    qkv_bias: torch.Tensor | None
    gate_up: torch.Tensor


def _fuse(layer: DecoderLayer) -> _Fused:
    attn, mlp = layer.self_attn, layer.mlp
    bias = None if attn.q_proj.bias is None else torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias])
    return _Fused(torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]), bias,
                  torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]))


def _sources(layer: DecoderLayer) -> list[torch.Tensor]:
    attn, mlp = layer.self_attn, layer.mlp
    return [t for t in (attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight, attn.q_proj.bias,
                        attn.k_proj.bias, attn.v_proj.bias, mlp.gate_proj.weight, mlp.up_proj.weight) if t is not None]


class ModelRunner:
    def __init__(self, model: MiMoForCausalLM, max_len: int, num_mtp_layers: int):
        config = model.config
        self.model = model
        self.layers: list[DecoderLayer] = list(model.model.layers)
        self.mtp_layers: list[MTPLayer] = list(model.model.mtp_layers)[:num_mtp_layers]
        self.n_heads, self.n_kv_heads, self.head_dim = (
            config.num_attention_heads, config.num_key_value_heads, config.head_dim)
        self.intermediate, self.eps = config.intermediate_size, config.rms_norm_eps
        cos, sin = model.model.rotary(torch.arange(max_len, device=model.device), model.dtype)  # [L, D]
        half = self.head_dim // 2
        # rotate_half(x) * sin == roll(x, D/2) * [-sin_lo, sin_hi], bit for bit.
        self.cos, self.sin = cos, torch.cat([-sin[:, :half], sin[:, half:]], dim=-1)
        self._key: list[tuple[int, int]] = []
        self._fused: list[_Fused] = []

    def refresh(self) -> None:
        """Rebuild the fused weights if any source tensor was replaced or changed in place."""
        layers = self.layers + self.mtp_layers
        key = [(t.data_ptr(), t._version) for layer in layers for t in _sources(layer)]
        if key != self._key:
            self._fused, self._key = [_fuse(layer) for layer in layers], key

    # ---- forward pieces -------------------------------------------------------------------------

    def _norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return weight * F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype)

    def _block(self, x, layer: DecoderLayer, fused: _Fused, cos, sin, k_cache, v_cache, rows, positions,
               length: int, mask: torch.Tensor | None) -> torch.Tensor:
        """One decoder block at `positions` [B, T]; writes this step's keys/values into the cache rows."""
        B, T, _ = x.shape
        Hq, Hk, D = self.n_heads, self.n_kv_heads, self.head_dim
        qkv = F.linear(self._norm(x, layer.input_layernorm.weight), fused.qkv, fused.qkv_bias).view(B, T, -1, D)
        qk = qkv[:, :, :Hq + Hk]
        qk = qk * cos + qk.roll(D // 2, dims=-1) * sin
        # Advanced indices on dims 0 and 2 take values laid out [B, T, Hk, D]: the projection's own layout.
        k_cache[rows, :, positions] = qk[:, :, Hq:]
        v_cache[rows, :, positions] = qkv[:, :, Hq + Hk:]
        y = F.scaled_dot_product_attention(qk[:, :, :Hq].transpose(1, 2), k_cache[:, :, :length],
                                           v_cache[:, :, :length], attn_mask=mask,
                                           is_causal=mask is None and T > 1, enable_gqa=True)
        x = x + F.linear(y.transpose(1, 2).reshape(B, T, Hq * D), layer.self_attn.o_proj.weight)
        gate, up = F.linear(self._norm(x, layer.post_attention_layernorm.weight), fused.gate_up).split(
            self.intermediate, dim=-1)
        return x + F.linear(F.silu(gate) * up, layer.mlp.down_proj.weight)

    def trunk(self, cache: KVCache, input_ids: torch.Tensor, positions: torch.Tensor, start: int,
              length: int, mask: torch.Tensor | None) -> torch.Tensor:
        """Main-model forward for slots start..start+B-1 -> pre-norm hidden [B, T, H]. `length`: keys
        to attend over (max position + 1); mask None = causal from position 0 (T > 1) or all keys (T = 1)."""
        cache.reserve(length)
        B = input_ids.shape[0]
        rows = torch.arange(B, device=input_ids.device)[:, None]
        cos, sin = self.cos[positions][:, :, None], self.sin[positions][:, :, None]  # [B, T, 1, D]
        x = self.model.model.embed_tokens(input_ids)
        for i, layer in enumerate(self.layers):
            x = self._block(x, layer, self._fused[i], cos, sin, cache.k[i, start:start + B], cache.v[i, start:start + B],
                            rows, positions, length, mask)
        return x

    def mtp_block(self, cache: KVCache, hidden: torch.Tensor, next_ids: torch.Tensor, positions: torch.Tensor,
                  length: int, mask: torch.Tensor | None) -> torch.Tensor:
        """MTP layer 0 before its final norm (`MTPLayer.block`) for slots 0..B-1, through `cache`."""
        cache.reserve(length)
        layer, B = self.mtp_layers[0], hidden.shape[0]
        rows = torch.arange(B, device=hidden.device)[:, None]
        cos, sin = self.cos[positions][:, :, None], self.sin[positions][:, :, None]
        x = torch.cat([self._norm(hidden, layer.hidden_layernorm.weight),
                       self._norm(self.model.model.embed_tokens(next_ids), layer.token_layernorm.weight)], dim=-1)
        x = F.linear(x, layer.input_proj.weight)
        return self._block(x, layer, self._fused[len(self.layers)], cos, sin, cache.k[0, :B], cache.v[0, :B],
                           rows, positions, length, mask)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(self._norm(hidden, self.model.model.norm.weight)).float()

    def mtp_logits(self, state: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(self._norm(state, self.mtp_layers[0].final_layernorm.weight)).float()
