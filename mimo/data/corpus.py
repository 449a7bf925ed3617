"""Loaders for the user's own data: plain-text / JSONL corpora for pretraining, chat JSONL for SFT.

    pretraining  a .txt file (one document), a .jsonl file (one {"text": ...} object per line), or a
                 folder of such files (read in sorted order)
    SFT          a .jsonl file with one {"messages": [{"role": ..., "content": ...}, ...]} per line

Everything is read and checked before any compute is spent: a malformed line is an error naming the
file and line number, and a corpus with no text is an error naming the path.
"""

from __future__ import annotations

import json
from pathlib import Path

ROLES = ("system", "user", "assistant", "tool")


class DataError(ValueError):
    """Unusable training data; the message names the file (and line)."""


def read_jsonl(path: str | Path, required: tuple[str, ...] = ()) -> list[tuple[int, dict]]:
    """(line number, object) for every non-blank line of a JSONL file; a DataError naming the file and
    line for malformed JSON, a line that is not an object, or a missing `required` field."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{line_no}: malformed JSON ({e.msg} at column {e.colno})") from e
            if not isinstance(row, dict):
                raise DataError(f"{path}:{line_no}: expected a JSON object, got {type(row).__name__}")
            missing = [key for key in required if key not in row]
            if missing:
                raise DataError(f"{path}:{line_no}: missing field(s) {', '.join(missing)}")
            rows.append((line_no, row))
    return rows


def read_text_corpus(path: str | Path, text_key: str = "text") -> list[str]:
    """Documents of a pretraining corpus (see the module docstring for the accepted layouts)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: corpus not found")
    files = sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".jsonl")) if path.is_dir() else [path]
    docs: list[str] = []
    for file in files:
        if file.suffix == ".jsonl":
            for line_no, row in read_jsonl(file):
                text = row.get(text_key)
                if not isinstance(text, str):
                    raise DataError(f"{file}:{line_no}: expected a string field {text_key!r}")
                docs.append(text)
        else:
            docs.append(file.read_text(encoding="utf-8"))
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise DataError(f"{path}: the corpus is empty (no non-blank documents"
                        + (" in any .txt/.jsonl file)" if path.is_dir() else ")"))
    return docs


def read_chat_jsonl(path: str | Path) -> list[list[dict[str, str]]]:
    """Conversations of an SFT file; every one must contain at least one assistant turn to learn from."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: chat file not found")
    chats = []
    for line_no, row in read_jsonl(path):
        messages = row.get("messages")
        if not isinstance(messages, list) or not messages:
            raise DataError(f"{path}:{line_no}: expected a non-empty list field 'messages'")
        for m in messages:
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise DataError(f"{path}:{line_no}: each message needs a role in {ROLES} and a string content, "
                                f"got {m!r}")
        if not any(m["role"] == "assistant" for m in messages):
            raise DataError(f"{path}:{line_no}: the conversation has no assistant turn to train on")
        chats.append([{"role": m["role"], "content": m["content"]} for m in messages])
    if not chats:
        raise DataError(f"{path}: the chat file is empty")
    return chats
