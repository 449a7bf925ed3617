"""Hugging Face-layout checkpoints: exact names, round trips, sharding, atomic saves and bad input."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mimo.checkpoint import CheckpointError, load_model, tensor_shapes
from mimo.config import MiMoConfig
from mimo.model import MiMoForCausalLM


def tiny(tmp_path, **overrides):
    torch.manual_seed(0)
    model = MiMoForCausalLM(MiMoConfig.from_preset("mimo-2m", vocab_size=300, **overrides)).eval()
    model.save_pretrained(tmp_path)
    return model


def spec_tensor_names_7b() -> dict[str, list[int]]:
    """The published MiMo-7B tensor list, written out from mimo-spec.md sections 1.1 and 1.3."""
    H, I, V, KV = 4096, 11008, 151680, 1024
    block = {
        "input_layernorm.weight": [H], "post_attention_layernorm.weight": [H],
        "self_attn.q_proj.weight": [H, H], "self_attn.q_proj.bias": [H],
        "self_attn.k_proj.weight": [KV, H], "self_attn.k_proj.bias": [KV],
        "self_attn.v_proj.weight": [KV, H], "self_attn.v_proj.bias": [KV],
        "self_attn.o_proj.weight": [H, H],
        "mlp.gate_proj.weight": [I, H], "mlp.up_proj.weight": [I, H], "mlp.down_proj.weight": [H, I],
    }
    names = {"model.embed_tokens.weight": [V, H], "model.norm.weight": [H], "lm_head.weight": [V, H]}
    for i in range(36):
        names.update({f"model.layers.{i}.{k}": v for k, v in block.items()})
    mtp = {**block, "token_layernorm.weight": [H], "hidden_layernorm.weight": [H],
           "input_proj.weight": [H, 2 * H], "final_layernorm.weight": [H]}
    names.update({f"model.mtp_layers.0.{k}": v for k, v in mtp.items()})
    return names


def test_mimo_7b_preset_matches_published_tensor_names():
    with torch.device("meta"):
        model = MiMoForCausalLM(MiMoConfig.from_preset("mimo-7b"))
    ours = {n: list(p.shape) for n, p in model.named_parameters()}
    assert ours == spec_tensor_names_7b()
    counts = model.num_parameters()
    assert counts["mtp"] == 210_790_400 and round(counts["total"] / 1e9, 2) == 7.83
    assert len([n for n in ours if n.startswith("model.mtp_layers.0.")]) == 16


def test_roundtrip_with_mtp(tmp_path):
    model = tiny(tmp_path, num_nextn_predict_layers=2)
    loaded = MiMoForCausalLM.from_pretrained(tmp_path)
    assert loaded.state_dict().keys() == model.state_dict().keys()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    ids = torch.randint(0, 300, (2, 8))
    a, b = model(ids), loaded(ids)
    assert torch.equal(a.logits, b.logits)
    assert all(torch.equal(x, y) for x, y in zip(a.mtp_logits, b.mtp_logits))
    assert json.loads((tmp_path / "config.json").read_text())["num_nextn_predict_layers"] == 2


def test_sharded_save_and_dtypes(tmp_path):
    model = tiny(tmp_path / "fp32")
    model.save_pretrained(tmp_path / "bf16", max_shard_size="1MB", dtype="bfloat16")
    index = json.loads((tmp_path / "bf16" / "model.safetensors.index.json").read_text())
    files = set(index["weight_map"].values())
    assert len(files) > 1 and not (tmp_path / "bf16" / "model.safetensors").exists()
    assert all(dt == "BF16" for _, dt in tensor_shapes(tmp_path / "bf16").values())
    upcast = MiMoForCausalLM.from_pretrained(tmp_path / "bf16", dtype=torch.float32)
    assert upcast.dtype == torch.float32
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(upcast.state_dict()[name], tensor.bfloat16().float(), atol=0, rtol=0)
    assert MiMoForCausalLM.from_pretrained(tmp_path / "bf16").dtype == torch.bfloat16


def test_unknown_config_keys_survive_and_qwen2_config_loads(tmp_path):
    config = MiMoConfig.from_dict({**MiMoConfig.from_preset("mimo-2m").to_dict(), "my_custom_key": [1, 2]})
    config.to_json(tmp_path / "config.json")
    assert json.loads((tmp_path / "config.json").read_text())["my_custom_key"] == [1, 2]
    qwen2 = MiMoConfig.from_dict({"model_type": "qwen2", "hidden_size": 64, "num_attention_heads": 4,
                                  "num_key_value_heads": 2, "rope_parameters": {"rope_theta": 5e5}})
    assert qwen2.num_nextn_predict_layers == 0 and qwen2.head_dim == 16 and qwen2.rope_theta == 5e5


def _rewrite(path, mutate):
    file = path / "model.safetensors"
    with safe_open(str(file), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    mutate(tensors)
    save_file(tensors, str(file), metadata={"format": "pt"})


def test_missing_tensor_is_named(tmp_path):
    tiny(tmp_path)
    _rewrite(tmp_path, lambda t: t.pop("model.layers.2.mlp.up_proj.weight"))
    with pytest.raises(CheckpointError, match=r"missing tensor 'model\.layers\.2\.mlp\.up_proj\.weight'"):
        load_model(tmp_path)


def test_wrong_shape_is_named(tmp_path):
    tiny(tmp_path)
    _rewrite(tmp_path, lambda t: t.update({"model.norm.weight": torch.ones(7)}))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: tensor 'model\.norm\.weight' has shape \[7\]"):
        load_model(tmp_path)


def test_truncated_file_is_named(tmp_path):
    tiny(tmp_path)
    file = tmp_path / "model.safetensors"
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_model(tmp_path)


def test_config_contradicting_weights(tmp_path):
    tiny(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    with pytest.raises(CheckpointError, match=r"'model\.layers\.3\..*' is not part of the model.*num_hidden_layers=3"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "hidden_size": 256}))
    with pytest.raises(CheckpointError, match="has shape"):
        load_model(tmp_path)


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = tiny(tmp_path / "ckpt")
    before = {p.name: p.read_bytes() for p in (tmp_path / "ckpt").iterdir()}
    import mimo.checkpoint as ckpt

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", broken_save)
    with torch.no_grad():
        model.lm_head.weight.add_(1.0)
    with pytest.raises(OSError):
        model.save_pretrained(tmp_path / "ckpt")
    assert {p.name: p.read_bytes() for p in (tmp_path / "ckpt").iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary folder left behind


KILLED_SAVE = """
import sys, time, torch
import mimo.checkpoint as ckpt
from mimo.config import MiMoConfig
from mimo.model import MiMoForCausalLM
real = ckpt.save_file
def slow_save(*args, **kwargs):
    real(*args, **kwargs)
    print("shard", flush=True)
    time.sleep(30)
ckpt.save_file = slow_save
MiMoForCausalLM(MiMoConfig.from_preset("mimo-2m")).save_pretrained(sys.argv[1], max_shard_size="1MB")
"""


def test_sigkill_mid_save_never_leaves_a_complete_looking_checkpoint(tmp_path):
    target = tmp_path / "ckpt"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_SAVE, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "shard"  # the first shard is on disk
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not target.exists()
    leftovers = list(tmp_path.iterdir())
    assert leftovers and all(p.name.startswith(".ckpt.tmp-") for p in leftovers)
    with pytest.raises(ValueError):
        load_model(target)


def test_info_reads_headers(tmp_path):
    tiny(tmp_path)
    out = subprocess.run([sys.executable, "-m", "mimo", "info", str(tmp_path)], capture_output=True, text=True,
                         env={**os.environ, "COLUMNS": "200"})
    assert out.returncode == 0, out.stderr
    counts = MiMoForCausalLM(MiMoConfig.from_preset("mimo-2m", vocab_size=300)).num_parameters()
    assert f"trunk {counts['trunk']:,}" in out.stdout and f"mtp {counts['mtp']:,}" in out.stdout
    assert f"tensors: {len(tensor_shapes(tmp_path))}" in out.stdout
