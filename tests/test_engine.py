"""Engine correctness: greedy parity with a full-recompute loop and with transformers, continuous
batching, speculative decoding (identical greedy output, unchanged sampling distribution),
sampling controls, log-probs against a trainer-style recompute, aborts."""

import math

import pytest
import torch

from mimo.config import MiMoConfig
from mimo.engine import Engine, SamplingParams
from mimo.engine.engine import _layout
from mimo.engine.sampling import process_logits
from mimo.engine import runner
from mimo.engine.runner import _Linear, can_prepack
from mimo.model import MiMoForCausalLM

# A pattern language the tiny model memorises in seconds, so its MTP layer drafts well.
WORDS = [[5, 9, 11], [3, 4, 5, 6, 7], [20, 21, 22, 23], [8, 30, 2, 17, 9], [12, 13, 12, 14]]
TINY = dict(vocab_size=32, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16)


def random_model(seed=0, **overrides) -> MiMoForCausalLM:
    # std 0.1 spreads the logits enough that argmax ties (which batching numerics could flip) are rare.
    torch.manual_seed(seed)
    return MiMoForCausalLM(MiMoConfig.from_preset("mimo-2m", initializer_range=0.1, **overrides)).eval()


def train_pattern_model(steps: int, seed: int = 0) -> MiMoForCausalLM:
    torch.manual_seed(seed)
    model = MiMoForCausalLM(MiMoConfig.from_preset("mimo-2m", **TINY))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        words = [WORDS[int(i)] for i in torch.randint(0, len(WORDS), (16,), generator=g)]
        x = torch.tensor([(w * 20)[:48] for w in words])
        loss = model(x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def model():
    return random_model()


@pytest.fixture(scope="module")
def pattern_model():
    return train_pattern_model(150)


def random_prompts(count, low, high, vocab, seed=1):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(low, high, (count,), generator=g).tolist()
    return [torch.randint(0, vocab, (n,), generator=g).tolist() for n in lengths]


@torch.no_grad()
def recompute_greedy(model, prompt, max_tokens):
    """The plainest possible decoder: rerun the whole sequence for every token."""
    ids = list(prompt)
    for _ in range(max_tokens):
        ids.append(int(model(torch.tensor([ids]), with_mtp=False).logits[0, -1].argmax()))
    return ids[len(prompt):]


GREEDY = SamplingParams(max_tokens=12, temperature=0)


@pytest.mark.parametrize("prepack", [True, False])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 0.1)])
def test_runner_matches_the_model_forward(dtype, tol, prepack, monkeypatch):
    """The engine's fused forward (mimo/engine/runner.py) against MiMoForCausalLM itself, trunk and MTP,
    on two right-padded prompts written into cache slots 1 and 2, with and without prepacked weights
    (every weight of this tiny model, though by default only large ones are packed)."""
    monkeypatch.setattr(_Linear, "PACK_MIN_BYTES", 0)
    model = random_model(seed=4, attention_bias=True).to(dtype)
    ids = torch.tensor(random_prompts(2, 9, 10, model.config.vocab_size, seed=2))  # both 9 tokens long
    with torch.no_grad():
        ref = model(ids)
    engine = Engine(model, max_batch_size=4, num_speculative_tokens=1, prepack=prepack)
    assert engine.runner.prepack == engine.runner.lm_head.prepacked == (prepack and can_prepack(model.device, dtype))
    with torch.inference_mode():
        hidden = engine.runner.trunk(engine.cache, ids, _layout([0, 0], 9, ids.device, start=1))
        logits = engine.runner.logits(hidden).view(2, 9, -1)
        future = torch.cat([ids[:, 1:], torch.zeros(2, 1, dtype=torch.long)], dim=1)
        state = engine.runner.mtp_block(engine.mtp_cache, hidden, future, _layout([0, 0], 9, ids.device))
        mtp_logits = engine.runner.mtp_logits(state).view(2, 9, -1)
        # One more decode position per row, at different lengths (the masked path), against a full forward.
        step = _layout([5, 3], 1, ids.device, start=1)
        last = engine.runner.logits(engine.runner.trunk(engine.cache, ids[:, :1], step))
    assert (logits - ref.logits.float()).abs().max() < tol
    assert (mtp_logits - ref.mtp_logits[0].float()).abs().max() < tol
    with torch.no_grad():
        for row, n in ((0, 5), (1, 3)):
            full = model(torch.cat([ids[row, :n], ids[row, :1]])[None], with_mtp=False).logits[0, -1]
            assert (last[row] - full.float()).abs().max() < tol


def test_weights_changed_in_place_are_picked_up(monkeypatch):
    """RL trains the policy between rollouts, and the server loads new weights into its model: the
    engine's fused and packed weight copies must follow."""
    monkeypatch.setattr(_Linear, "PACK_MIN_BYTES", 0)
    model, other = random_model(seed=5), random_model(seed=6)
    prompt = random_prompts(1, 5, 6, model.config.vocab_size, seed=3)
    engine = Engine(model)
    before = engine.generate(prompt, GREEDY)[0].samples[0].token_ids
    model.load_state_dict(other.state_dict())  # copies in place
    after = engine.generate(prompt, GREEDY)[0].samples[0].token_ids
    assert after == Engine(other).generate(prompt, GREEDY)[0].samples[0].token_ids
    assert after != before


def test_no_prepacking_when_the_copies_would_not_fit(model, monkeypatch, caplog):
    """Packed weight copies double the projections' memory; an engine that would run the machine out
    of memory with them runs on the model's own weights instead (no copies), with the same output."""
    monkeypatch.setattr(_Linear, "PACK_MIN_BYTES", 0)
    prompts = random_prompts(2, 3, 9, model.config.vocab_size, seed=8)
    packed = Engine(model)
    monkeypatch.setattr(runner, "available_memory", lambda: 1 << 20)
    with caplog.at_level("WARNING"):
        unpacked = Engine(model)
    assert packed.runner.prepack == can_prepack(model.device, model.dtype) and not unpacked.runner.prepack
    assert "not prepacking" in caplog.text
    layer, block = model.model.layers[0], unpacked.runner.weights[0]  # no copies: the model's own tensors
    assert block.qkv.parts[0][0] is layer.self_attn.q_proj.weight and block.o.weight is layer.self_attn.o_proj.weight
    assert not hasattr(block.qkv, "weight") and not hasattr(block.gate_up, "weight")
    assert unpacked.runner.lm_head.weight is model.lm_head.weight
    assert ([o.samples[0].token_ids for o in packed.generate(prompts, GREEDY)]
            == [o.samples[0].token_ids for o in unpacked.generate(prompts, GREEDY)])


def test_greedy_equals_full_recompute_loop(model):
    prompts = random_prompts(6, 1, 40, model.config.vocab_size)
    outs = Engine(model, max_batch_size=3).generate(prompts, GREEDY)  # 3 slots: requests join mid-run
    for prompt, out in zip(prompts, outs):
        assert out.samples[0].token_ids == recompute_greedy(model, prompt, 12)
        assert out.samples[0].finish_reason == "length"


@pytest.mark.parametrize("pack_min_bytes", [_Linear.PACK_MIN_BYTES, 0])
def test_greedy_equals_transformers_generate_on_qwen2_weights(tmp_path, monkeypatch, pack_min_bytes):
    """Also with every weight prepacked (oneDNN's kernels round differently from F.linear's)."""
    transformers = pytest.importorskip("transformers")
    monkeypatch.setattr(_Linear, "PACK_MIN_BYTES", pack_min_bytes)
    model = random_model(seed=3, num_nextn_predict_layers=0, model_type="qwen2",
                         architectures=["Qwen2ForCausalLM"])
    model.save_pretrained(tmp_path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    loaded = MiMoForCausalLM.from_pretrained(tmp_path)
    prompts = random_prompts(3, 4, 20, model.config.vocab_size, seed=5)
    outs = Engine(loaded).generate(prompts, SamplingParams(max_tokens=16, temperature=0))
    for prompt, out in zip(prompts, outs):
        ref = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                          max_new_tokens=16, do_sample=False, eos_token_id=None, pad_token_id=0)
        assert out.samples[0].token_ids == ref[0, len(prompt):].tolist()


def test_32_concurrent_requests_match_their_solo_runs(model):
    prompts = random_prompts(32, 1, 60, model.config.vocab_size, seed=7)
    params = [SamplingParams(max_tokens=4 + i % 13, temperature=0) for i in range(32)]
    engine = Engine(model, max_batch_size=32, max_batched_tokens=256)  # budget: admission spans steps
    outs = engine.generate(prompts, params)
    solo = Engine(model, max_batch_size=1)
    for prompt, p, out in zip(prompts, params, outs):
        assert out.samples[0].token_ids == solo.generate([prompt], p)[0].samples[0].token_ids
        assert len(out.samples[0].token_ids) == p.max_tokens
    assert engine.num_running == 0 and not engine.requests


@pytest.mark.parametrize("k", [1, 3])
def test_speculative_greedy_is_token_identical(model, pattern_model, k):
    for m, vocab in ((model, model.config.vocab_size), (pattern_model, 32)):
        prompts = random_prompts(5, 2, 30, vocab, seed=11) + [w * 2 for w in WORDS]
        params = SamplingParams(max_tokens=24, temperature=0)
        plain = Engine(m, max_batch_size=4).generate(prompts, params)
        engine = Engine(m, max_batch_size=4, num_speculative_tokens=k)
        spec = engine.generate(prompts, params)
        for a, b in zip(plain, spec):
            assert a.samples[0].token_ids == b.samples[0].token_ids
            assert b.samples[0].raw_logprobs == pytest.approx(a.samples[0].raw_logprobs, abs=1e-4)
    assert engine.stats.acceptance_rate[0] > 0.8  # the trained pattern model's MTP drafts well


def test_speculative_sampling_keeps_the_distribution():
    """Sampled with speculation on, (x2, x3) must follow the model's exact distribution (x1 comes from
    the prefill; x2 and x3 from one draft-and-verify step, through both the accept and the residual path)."""
    model = train_pattern_model(25, seed=2)
    with torch.no_grad():  # flatten the drafter so that drafts are often rejected: both paths get exercised
        model.model.mtp_layers[0].final_layernorm.weight.mul_(0.1)
    prompt = [5, 9, 11, 5]
    V = 32
    with torch.no_grad():
        p1 = model(torch.tensor([prompt]), with_mtp=False).logits[0, -1].softmax(-1)
        p2 = model(torch.tensor([prompt + [a] for a in range(V)]), with_mtp=False).logits[:, -1].softmax(-1)
        thirds = torch.tensor([prompt + [a, b] for a in range(V) for b in range(V)])
        p3 = model(thirds, with_mtp=False).logits[:, -1].softmax(-1).view(V, V, V)
    joint = torch.einsum("a,ab,abc->bc", p1, p2, p3).flatten()
    n = 3000
    engine = Engine(model, max_batch_size=64, num_speculative_tokens=1)
    outs = engine.generate([prompt] * n, [SamplingParams(max_tokens=3, temperature=1.0, seed=i) for i in range(n)])
    counts = torch.zeros(V * V)
    for out in outs:
        x = out.samples[0].token_ids
        counts[x[1] * V + x[2]] += 1
    rate = engine.stats.acceptance_rate[0]
    assert 0.05 < rate < 0.95, rate
    # Chi-square over the cells with enough expected mass, the rest pooled into one.
    expected = joint * n
    big = expected >= 5
    chi2 = (((counts[big] - expected[big]) ** 2) / expected[big]).sum()
    rest_e, rest_c = expected[~big].sum(), counts[~big].sum()
    chi2 += (rest_c - rest_e) ** 2 / rest_e
    dof = int(big.sum())  # cells - 1 + the pooled cell
    assert chi2 < dof + 5 * math.sqrt(2 * dof), (float(chi2), dof)  # ~5 sigma: fails only when broken


def test_logprobs_match_a_trainer_recompute(model):
    prompts = random_prompts(4, 3, 20, model.config.vocab_size, seed=13)
    params = SamplingParams(max_tokens=10, temperature=0.7, seed=3, logprobs=3)
    outs = Engine(model).generate(prompts, params)
    for prompt, out in zip(prompts, outs):
        s = out.samples[0]
        ids = torch.tensor([prompt + s.token_ids])
        with torch.no_grad():
            logits = model(ids, with_mtp=False).logits[0, len(prompt) - 1:-1]
        gen = torch.tensor(s.token_ids)[:, None]
        raw = logits.log_softmax(-1).gather(-1, gen)[:, 0]
        tempered = (logits / 0.7).log_softmax(-1).gather(-1, gen)[:, 0]
        assert s.raw_logprobs == pytest.approx(raw.tolist(), abs=1e-4)
        assert s.logprobs == pytest.approx(tempered.tolist(), abs=1e-4)
        top = logits.log_softmax(-1).topk(3)
        assert [list(t) for t in s.top_logprobs] == top.indices.tolist()


def test_seeds_reproduce_and_n_samples_differ(model):
    engine = Engine(model, max_batch_size=8)
    prompt = [1, 2, 3, 4]
    params = SamplingParams(max_tokens=16, temperature=1.0, n=3, seed=42)
    a = engine.generate([prompt], params)[0]
    other = random_prompts(3, 2, 30, model.config.vocab_size)
    b = engine.generate([prompt] + other, [params] + [SamplingParams(max_tokens=5)] * 3)[0]  # other batch-mates
    assert [s.token_ids for s in a.samples] == [s.token_ids for s in b.samples]
    assert len({tuple(s.token_ids) for s in a.samples}) == 3


def test_stop_tokens_and_max_tokens(model):
    engine = Engine(model)
    prompt = [7, 8, 9]
    free = engine.generate([prompt], GREEDY)[0].samples[0].token_ids
    stop_at = free[4]
    first = free.index(stop_at)
    out = engine.generate([prompt], SamplingParams(max_tokens=12, temperature=0, stop_token_ids=[stop_at]))
    assert out[0].samples[0].token_ids == free[:first + 1] and out[0].samples[0].finish_reason == "stop"
    eos_engine = Engine(model, eos_token_ids=[stop_at])
    assert eos_engine.generate([prompt], GREEDY)[0].samples[0].finish_reason == "stop"
    ignore = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
    assert eos_engine.generate([prompt], ignore)[0].samples[0].token_ids == free


def test_context_limit_and_bad_requests(model):
    engine = Engine(model, max_seq_len=32)
    out = engine.generate([list(range(1, 30))], SamplingParams(max_tokens=100, temperature=0))[0]
    assert len(out.samples[0].token_ids) == 3 and out.samples[0].finish_reason == "length"
    for prompt, params in [([], SamplingParams()), (list(range(32)), SamplingParams()),
                           ([10**6], SamplingParams()), ([1], SamplingParams(n=64)),
                           ([1], SamplingParams(stop=["x"]))]:
        with pytest.raises(ValueError):
            engine.add_request(prompt, params)
    for bad in (dict(max_tokens=0), dict(temperature=-1), dict(top_p=0), dict(n=0), dict(logprobs=99)):
        with pytest.raises(ValueError):
            SamplingParams(**bad)


def test_abort_frees_slots_and_others_continue(model):
    engine = Engine(model, max_batch_size=4, num_speculative_tokens=0)
    prompts = random_prompts(4, 2, 20, model.config.vocab_size, seed=17)
    ids = [engine.add_request(p, SamplingParams(max_tokens=20, temperature=0)) for p in prompts]
    engine.step()
    engine.step()
    assert engine.num_running == 4
    assert engine.abort(ids[1]) and not engine.abort(ids[1])
    assert engine.num_running == 3
    finished = {}
    while engine.has_unfinished():
        finished.update((o.request_id, o) for o in engine.step() if o.finished)
    solo = Engine(model)
    for i in (0, 2, 3):
        expect = solo.generate([prompts[i]], SamplingParams(max_tokens=20, temperature=0))[0]
        assert finished[ids[i]].samples[0].token_ids == expect.samples[0].token_ids
    assert ids[1] not in finished


def test_process_logits_filters():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]] * 4)
    params = [SamplingParams(top_k=2), SamplingParams(top_p=0.8), SamplingParams(min_p=0.2),
              SamplingParams(temperature=2.0)]
    out = process_logits(logits, params)
    kept = torch.isfinite(out)
    probs = logits[0].softmax(-1)  # [0.636, 0.234, 0.086, 0.032, 0.012]
    assert kept[0].tolist() == [True, True, False, False, False]
    assert kept[1].tolist() == [True, True, False, False, False]  # 0.636 < 0.8 <= 0.636 + 0.234
    assert kept[2].tolist() == (probs >= 0.2 * probs[0]).tolist()
    assert out[3].tolist() == pytest.approx((logits[3] / 2).tolist())
