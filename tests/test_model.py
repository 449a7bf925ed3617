"""The model against a real peer (transformers' Qwen2) and the MTP contract."""

import pytest
import torch
import torch.nn.functional as F

from mimo.config import MiMoConfig
from mimo.model import MiMoForCausalLM, attention_mask_to_4d

transformers = pytest.importorskip("transformers")


def random_qwen2(tmp_path, tie=False):
    torch.manual_seed(0)
    cfg = transformers.Qwen2Config(
        vocab_size=320, hidden_size=64, intermediate_size=160, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, rope_theta=12345.0, tie_word_embeddings=tie)
    hf = transformers.Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():  # non-trivial biases and norms, so every parameter matters
            p.normal_(0, 0.05)
    hf.save_pretrained(tmp_path)
    return hf


def padded_batch(lengths, T, vocab, left=True):
    ids = torch.randint(0, vocab, (len(lengths), T))
    mask = torch.zeros(len(lengths), T, dtype=torch.long)
    for i, n in enumerate(lengths):
        if left:
            mask[i, T - n:] = 1
        else:
            mask[i, :n] = 1
    return ids, mask


@pytest.mark.parametrize("tie", [False, True])
def test_logits_match_transformers_qwen2(tmp_path, tie):
    hf = random_qwen2(tmp_path, tie)
    model = MiMoForCausalLM.from_pretrained(tmp_path)
    assert model.config.num_nextn_predict_layers == 0 and model.config.tie_word_embeddings == tie
    ids = torch.randint(0, 320, (2, 17))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, hf(ids).logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("left", [True, False])
def test_padding_matches_transformers_and_unpadded(tmp_path, left):
    hf = random_qwen2(tmp_path)
    model = MiMoForCausalLM.from_pretrained(tmp_path)
    ids, mask = padded_batch([12, 7, 3], 12, 320, left=left)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        ours = model(ids, attention_mask=mask).logits
        theirs = hf(ids, attention_mask=mask, position_ids=positions).logits
        real = mask.bool()
        torch.testing.assert_close(ours[real], theirs[real], atol=1e-4, rtol=0)
        assert torch.isfinite(ours).all()
        for i in range(3):  # each row alone, unpadded
            alone = model(ids[i][real[i]][None]).logits[0]
            torch.testing.assert_close(ours[i][real[i]], alone, atol=1e-5, rtol=0)


def test_mimo_checkpoint_loads_in_transformers(tmp_path):
    torch.manual_seed(0)
    model = MiMoForCausalLM(MiMoConfig.from_preset("mimo-2m", vocab_size=500)).eval()
    model.save_pretrained(tmp_path)
    # What vLLM's MiMo registry does: the trunk is a Qwen2 model; mtp_layers.* are skipped.
    hf = transformers.Qwen2ForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, 500, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, hf(ids).logits, atol=1e-4, rtol=0)


def test_mtp_wiring_and_loss():
    torch.manual_seed(0)
    config = MiMoConfig.from_preset("mimo-2m", vocab_size=97, num_nextn_predict_layers=2)
    model = MiMoForCausalLM(config).eval()
    ids = torch.randint(0, 97, (2, 10))
    out = model(ids, labels=ids)
    assert out.logits.shape == (2, 10, 97) and [m.shape for m in out.mtp_logits] == [(2, 10, 97)] * 2

    # Layer 0 at position t = lm_head(final_norm(block(proj([hnorm(h_t), enorm(emb(x_{t+1}))])))).
    layer, emb = model.model.mtp_layers[0], model.model.embed_tokens
    h = out.hidden_states
    x = layer.input_proj(torch.cat([layer.hidden_layernorm(h[:, :-1]), layer.token_layernorm(emb(ids[:, 1:]))], -1))
    pos = torch.arange(9).expand(2, 9)
    cos, sin = model.model.rotary(pos, x.dtype)
    x = x + layer.self_attn(layer.input_layernorm(x), cos, sin, None)
    x = x + layer.mlp(layer.post_attention_layernorm(x))
    manual = model.lm_head(layer.final_layernorm(x))
    torch.testing.assert_close(out.mtp_logits[0][:, :-1], manual, atol=1e-5, rtol=0)

    # Causality: MTP logits at t see tokens up to t+k+1 and no further.
    changed = ids.clone()
    changed[:, 6] = (changed[:, 6] + 1) % 97
    out2 = model(changed)
    torch.testing.assert_close(out2.mtp_logits[0][:, :5], out.mtp_logits[0][:, :5])
    assert not torch.allclose(out2.mtp_logits[0][:, 5], out.mtp_logits[0][:, 5])
    torch.testing.assert_close(out2.mtp_logits[1][:, :4], out.mtp_logits[1][:, :4])

    # Loss = main + w * mean over layers, each shifted by k + 2.
    main = F.cross_entropy(out.logits[:, :-1].reshape(-1, 97), ids[:, 1:].reshape(-1))
    mtp0 = F.cross_entropy(out.mtp_logits[0][:, :-2].reshape(-1, 97), ids[:, 2:].reshape(-1))
    mtp1 = F.cross_entropy(out.mtp_logits[1][:, :-3].reshape(-1, 97), ids[:, 3:].reshape(-1))
    torch.testing.assert_close(out.main_loss, main)
    torch.testing.assert_close(out.mtp_loss, (mtp0 + mtp1) / 2)
    torch.testing.assert_close(model(ids, labels=ids, mtp_loss_weight=0.1).loss, main + 0.1 * (mtp0 + mtp1) / 2)


def test_padding_is_ignored_by_the_loss():
    torch.manual_seed(0)
    model = MiMoForCausalLM(MiMoConfig.from_preset("mimo-2m", vocab_size=97)).eval()
    ids, mask = padded_batch([8, 5], 8, 97, left=False)
    padded = model(ids, attention_mask=mask, labels=ids)
    alone = model(ids[1:, :5], labels=ids[1:, :5])
    first = model(ids[:1], labels=ids[:1])
    # Token-weighted mean over both rows: 7 targets in row 0, 4 in row 1.
    expected = (first.main_loss * 7 + alone.main_loss * 4) / 11
    torch.testing.assert_close(padded.main_loss, expected, atol=1e-5, rtol=0)
    padded.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_mask_never_has_empty_rows():
    mask = attention_mask_to_4d(torch.tensor([[0, 0, 1, 1], [1, 1, 0, 0]]))
    assert mask.any(-1).all()
