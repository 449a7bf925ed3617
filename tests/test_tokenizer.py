"""Tokenizer: training, HF-format round trip (checked by transformers), ChatML and assistant masks."""

import pytest

from mimo.tokenizer import IM_END, THINK_END, THINK_START, Tokenizer, train_tokenizer

CORPUS = [f"Compute {a} * {b}. <think>\n{a} * {b} = {a * b}\n</think>\nThe answer is \\boxed{{{a * b}}}."
          for a in range(120) for b in range(0, 120, 7)]
CHAT = [
    {"role": "system", "content": ""},
    {"role": "user", "content": "What is 12 + 30?"},
    {"role": "assistant", "content": "\\boxed{42}", "reasoning_content": "12 + 30 = 42"},
    {"role": "user", "content": "And 1 + 1?"},
    {"role": "assistant", "content": "\\boxed{2}"},
]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(CORPUS, vocab_size=400)


def test_digits_are_single_tokens_and_think_tags_are_atomic(tok):
    ids = tok.encode("<think>9876</think>")
    assert [tok.id_to_token(i) for i in ids] == [THINK_START, "9", "8", "7", "6", THINK_END]
    assert tok.decode(tok.encode("x = 105 * 3\n")) == "x = 105 * 3\n"
    assert THINK_START in tok.decode(ids, skip_special_tokens=True)
    assert len(tok) <= 400 and tok.eos_token_id == tok.token_to_id(IM_END)


def test_empty_corpus_is_an_error():
    with pytest.raises(ValueError, match="empty corpus"):
        train_tokenizer([], vocab_size=300)


def test_saved_folder_loads_in_transformers(tok, tmp_path):
    transformers = pytest.importorskip("transformers")
    tok.save_pretrained(tmp_path)
    again = Tokenizer.from_pretrained(tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    text = "Compute 17 * 3. <think>\n17 * 3 = 51\n</think> \\boxed{51}"
    assert again.encode(text) == tok.encode(text) == hf.encode(text, add_special_tokens=False)
    assert hf.apply_chat_template(CHAT, tokenize=False) == tok.apply_chat_template(CHAT, tokenize=False)
    assert hf.eos_token == IM_END


def test_chatml_rendering(tok):
    text = tok.apply_chat_template(CHAT[:3], tokenize=False)
    assert text == ("<|im_start|>system\n<|im_end|>\n<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n"
                    "<|im_start|>assistant\n<think>\n12 + 30 = 42\n</think>\n\\boxed{42}<|im_end|>\n")
    prompt = tok.apply_chat_template(CHAT[:2], add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n")
    with pytest.raises(ValueError):
        tok.apply_chat_template([])


def test_encode_chat_masks_exactly_the_assistant_turns(tok):
    ids, mask = tok.encode_chat(CHAT)
    assert ids == tok.apply_chat_template(CHAT)
    trained = tok.decode([i for i, m in zip(ids, mask) if m])
    assert trained == "<think>\n12 + 30 = 42\n</think>\n\\boxed{42}<|im_end|>\n\\boxed{2}<|im_end|>\n"


def test_real_qwen2_style_folder_with_separate_template_file(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    config = (tmp_path / "tokenizer_config.json")
    import json
    data = json.loads(config.read_text())
    template = data.pop("chat_template")
    data["eos_token"] = {"content": IM_END, "special": True}
    config.write_text(json.dumps(data))
    (tmp_path / "chat_template.jinja").write_text(template)
    loaded = Tokenizer.from_pretrained(tmp_path)
    assert loaded.eos_token_id == tok.eos_token_id
    assert loaded.apply_chat_template(CHAT) == tok.apply_chat_template(CHAT)
