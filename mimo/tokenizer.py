"""Tokenizer: Hugging Face `tokenizers` under a small API, chat formatting, and BPE training.

A checkpoint folder is self-contained: tokenizer.json (the `tokenizers` model) and
tokenizer_config.json (special tokens and the Jinja chat template) sit beside the weights, in the
same format the Hugging Face hub uses, so a real MiMo-7B / Qwen2 folder loads the same way as one
trained here.

Chat format is ChatML, as MiMo uses: `<|im_start|>role\\n...<|im_end|>\\n`, with the reasoning of an
assistant turn between `<think>` and `</think>` ahead of its answer. Following Xiaomi's advice the
template adds no default system prompt.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable

from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
THINK_START, THINK_END = "<think>", "</think>"

CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' and message.get('reasoning_content') %}"
    "{{- '<think>\\n' + message['reasoning_content'] + '\\n</think>\\n' }}"
    "{%- endif %}"
    "{{- message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Qwen2's pre-tokenizer pattern: \p{N} alone splits every digit into its own token, which makes
# arithmetic learnable by tiny models (a number's tokens line up with its digits).
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _token_content(value: Any) -> str | None:
    """tokenizer_config.json stores special tokens as strings or as {"content": ...} dicts."""
    return value.get("content") if isinstance(value, dict) else value


class Tokenizer:
    def __init__(self, tokenizer: HFTokenizer, config: dict[str, Any] | None = None):
        self._tok = tokenizer
        self.config = dict(config or {})
        self.chat_template: str = self.config.get("chat_template") or CHATML_TEMPLATE

    # ---- loading and saving ------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "Tokenizer":
        path = Path(path)
        file = path / "tokenizer.json"
        if not file.exists():
            raise FileNotFoundError(f"{path}: no tokenizer.json (a mimo/Hugging Face tokenizer folder is expected)")
        config_file = path / "tokenizer_config.json"
        config = json.loads(config_file.read_text()) if config_file.exists() else {}
        template_file = path / "chat_template.jinja"  # transformers >= 4.47 may store the template apart
        if "chat_template" not in config and template_file.exists():
            config["chat_template"] = template_file.read_text()
        return cls(HFTokenizer.from_file(str(file)), config)

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self._tok.save(str(path / "tokenizer.json"))
        (path / "tokenizer_config.json").write_text(json.dumps(self.config, indent=2, ensure_ascii=False) + "\n")

    # ---- encoding ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        # No BOS/EOS is added: MiMo and Qwen2 prompts carry none, and chat markup supplies its own.
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._tok.id_to_token(token_id)

    def _special_id(self, key: str) -> int | None:
        content = _token_content(self.config.get(key))
        return self.token_to_id(content) if content else None

    @cached_property
    def eos_token_id(self) -> int | None:
        return self._special_id("eos_token")

    @cached_property
    def pad_token_id(self) -> int | None:
        return self._special_id("pad_token")

    @cached_property
    def bos_token_id(self) -> int | None:
        return self._special_id("bos_token")

    @cached_property
    def stop_token_ids(self) -> list[int]:
        """Tokens that end a generation: eos plus the ChatML turn end and end-of-text, where present."""
        ids = [self.eos_token_id, self.token_to_id(IM_END), self.token_to_id(ENDOFTEXT)]
        return sorted({i for i in ids if i is not None})

    # ---- chat --------------------------------------------------------------------------------

    @cached_property
    def _template(self):
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

        def raise_exception(message: str):
            raise ValueError(message)

        env.globals["raise_exception"] = raise_exception
        env.filters["tojson"] = lambda x, **kw: json.dumps(x, ensure_ascii=False, **kw)
        return env.from_string(self.chat_template)

    def render_chat(self, messages: list[dict[str, Any]], add_generation_prompt: bool = False, **kwargs) -> str:
        if not messages:
            raise ValueError("messages must not be empty")
        return self._template.render(
            messages=messages, add_generation_prompt=add_generation_prompt,
            bos_token=_token_content(self.config.get("bos_token")) or "",
            eos_token=_token_content(self.config.get("eos_token")) or "", **kwargs)

    def apply_chat_template(self, messages: list[dict[str, Any]], add_generation_prompt: bool = False,
                            tokenize: bool = True, **kwargs) -> list[int] | str:
        text = self.render_chat(messages, add_generation_prompt, **kwargs)
        return self.encode(text) if tokenize else text

    def encode_chat(self, messages: list[dict[str, Any]]) -> tuple[list[int], list[bool]]:
        """Token ids of a whole conversation and a mask that is True on tokens the assistant wrote
        (its reasoning, answer and closing <|im_end|>), for SFT losses on assistant tokens only.

        Each turn is rendered as the difference between the template applied to growing prefixes,
        so any prefix-consistent template works, not only ChatML."""
        ids: list[int] = []
        mask: list[bool] = []
        rendered = ""
        for i, message in enumerate(messages):
            pieces = []
            if message["role"] == "assistant":
                header = self._generation_header(messages[:i])
                pieces.append((header[len(rendered):], False))
                rendered = header
            full = self.render_chat(messages[: i + 1])
            if not full.startswith(rendered):
                raise ValueError("the chat template is not prefix-consistent; cannot mask assistant turns")
            pieces.append((full[len(rendered):], message["role"] == "assistant"))
            rendered = full
            for text, trained in pieces:
                piece = self.encode(text)
                ids.extend(piece)
                mask.extend([trained] * len(piece))
        return ids, mask

    def _generation_header(self, history: list[dict[str, Any]]) -> str:
        """The text before an assistant turn: the history plus the generation prompt."""
        if history:
            return self.render_chat(history, add_generation_prompt=True)
        # No history: the header is whatever the template emits for add_generation_prompt alone.
        return self._template.render(messages=[], add_generation_prompt=True, bos_token="", eos_token="")


# ---- training ---------------------------------------------------------------------------------

def train_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> Tokenizer:
    """Train a byte-level BPE (Qwen2-style pre-tokenization: digits one per token) on an iterable of texts.

    The ChatML specials come first (ids 0-2); <think> and </think> are added as normal (non-special)
    single tokens so decoding with skip_special_tokens keeps the reasoning markup."""
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    specials = [ENDOFTEXT, IM_START, IM_END]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 2,  # leave room for the two think tokens
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = iter(texts)
    first = next(texts, None)
    if first is None:
        raise ValueError("cannot train a tokenizer on an empty corpus")
    tok.train_from_iterator(_chain(first, texts), trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in (THINK_START, THINK_END)])
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": IM_END,
        "pad_token": ENDOFTEXT,
        "unk_token": None,
        "model_max_length": 32768,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHATML_TEMPLATE,
    }
    return Tokenizer(tok, config)


def _chain(first: str, rest: Iterable[str]) -> Iterable[str]:
    yield first
    yield from rest
