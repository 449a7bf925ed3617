"""MiMoConfig: the fields of MiMo-7B's config.json, presets, and reading/writing config.json.

MiMo's config is a Qwen2 config plus one key, `num_nextn_predict_layers` (the number of MTP layers).
A plain Qwen2 config (model_type "qwen2") loads too and simply has no MTP layers. Keys we do not
model (auto_map, quantization_config, ...) are kept in `extra` and written back unchanged, so a
load/save round trip never loses information another tool relies on.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class MiMoConfig:
    vocab_size: int = 151680
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 36
    num_attention_heads: int = 32
    num_key_value_heads: int = 8
    head_dim: int | None = None  # None: hidden_size // num_attention_heads (128 for MiMo-7B)
    hidden_act: str = "silu"
    max_position_embeddings: int = 32768
    rope_theta: float = 640000.0
    rope_scaling: dict | None = None
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False
    attention_bias: bool = True
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    use_cache: bool = True
    sliding_window: int | None = 32768
    use_sliding_window: bool = False
    max_window_layers: int = 32
    use_mrope: bool = False
    num_nextn_predict_layers: int = 1
    bos_token_id: int | None = 151643
    eos_token_id: int | list[int] | None = 151645
    pad_token_id: int | None = None
    torch_dtype: str = "bfloat16"
    model_type: str = "mimo"
    architectures: list[str] = field(default_factory=lambda: ["MiMoForCausalLM"])
    extra: dict[str, Any] = field(default_factory=dict)  # unknown config.json keys, kept verbatim

    def __post_init__(self) -> None:
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        if self.hidden_act != "silu":
            raise ValueError(f"hidden_act {self.hidden_act!r} is not supported (MiMo and Qwen2 use 'silu')")
        if self.rope_scaling and self.rope_scaling.get("rope_type", self.rope_scaling.get("type")) != "default":
            raise ValueError(f"rope_scaling {self.rope_scaling} is not supported; MiMo uses none")

    # ---- config.json I/O -------------------------------------------------------------------

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MiMoConfig":
        d = dict(d)
        # transformers >= 5 writes `dtype` and nests rope_theta inside `rope_parameters`.
        if "dtype" in d and "torch_dtype" not in d:
            d["torch_dtype"] = d.pop("dtype")
        rope_parameters = d.get("rope_parameters")
        if isinstance(rope_parameters, dict) and "rope_theta" not in d and "rope_theta" in rope_parameters:
            d["rope_theta"] = rope_parameters["rope_theta"]
        if d.get("model_type") == "qwen2":
            d.setdefault("num_nextn_predict_layers", 0)
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in d.items() if k in names}
        extra = {k: v for k, v in d.items() if k not in names}
        return cls(**known, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**d, **self.extra}

    @classmethod
    def from_json(cls, path: str | Path) -> "MiMoConfig":
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read model config {path}: {e}") from e

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "MiMoConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return dataclasses.replace(PRESETS[name], **overrides)

    @property
    def eos_token_ids(self) -> list[int]:
        if self.eos_token_id is None:
            return []
        return list(self.eos_token_id) if isinstance(self.eos_token_id, list) else [self.eos_token_id]


# MiMo-7B exactly as published (mimo-spec.md section 1.1). Small presets keep MiMo's shape ratios
# (GQA 4:1 where heads allow, SwiGLU ~2.7x, untied head, one MTP layer) for CPU work; their vocab
# sizes suit tokenizers trained by `mimo.tokenizer.train_tokenizer`.
_MIMO_AUTO_MAP = {
    "AutoConfig": "configuration_mimo.MiMoConfig",
    "AutoModel": "modeling_mimo.MiMoModel",
    "AutoModelForCausalLM": "modeling_mimo.MiMoForCausalLM",
}
_SMALL = dict(max_position_embeddings=2048, rope_theta=10000.0, sliding_window=None, torch_dtype="float32",
              bos_token_id=None, eos_token_id=None)

PRESETS: dict[str, MiMoConfig] = {
    "mimo-7b": MiMoConfig(extra={"auto_map": _MIMO_AUTO_MAP, "tokenizer_class": "Qwen2Tokenizer",
                                 "transformers_version": "4.40.1"}),
    "mimo-2m": MiMoConfig(vocab_size=4096, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_window_layers=4,
                          **_SMALL),
    "mimo-10m": MiMoConfig(vocab_size=8192, hidden_size=256, intermediate_size=704, num_hidden_layers=6,
                           num_attention_heads=8, num_key_value_heads=2, head_dim=32, max_window_layers=6,
                           **_SMALL),
    "mimo-50m": MiMoConfig(vocab_size=16384, hidden_size=512, intermediate_size=1408, num_hidden_layers=10,
                           num_attention_heads=8, num_key_value_heads=2, head_dim=64, max_window_layers=10,
                           **_SMALL),
}
