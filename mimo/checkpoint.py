"""Hugging Face-layout checkpoints: config.json + model.safetensors (or shards + index), exact tensor names.

Loading builds the model on the meta device and streams tensors one at a time out of the
memory-mapped safetensors files straight into place, so peak memory stays near one copy of the
weights (a 7B bf16 checkpoint loads in ~16 GB, not 30+). Every tensor is checked against the
config before anything is returned: a missing tensor, an unexpected one, a wrong shape or an
unreadable file is an error that names the file and the tensor.

Saving is atomic: everything is written to a hidden temporary folder beside the target, which is
renamed into place only once complete, so a crash never leaves a checkpoint that looks complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from mimo.config import MiMoConfig
from mimo.model import MiMoForCausalLM

SAFETENSORS_SINGLE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
# Tensors some older Qwen2 checkpoints carry that are derived state, not weights.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as-is; the message names the file and tensor."""


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    name = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}.get(
        dtype, dtype)
    resolved = getattr(torch, name, None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}")
    return resolved


def parse_size(size: int | str) -> int:
    """'5GB' / '500MB' / '2GiB' / 1000 -> bytes."""
    if isinstance(size, int):
        return size
    s = size.strip().upper()
    for unit, factor in (("GIB", 2**30), ("MIB", 2**20), ("KIB", 2**10), ("GB", 10**9), ("MB", 10**6),
                         ("KB", 10**3), ("B", 1)):
        if s.endswith(unit):
            return int(float(s[: -len(unit)]) * factor)
    return int(s)


# ---- reading -------------------------------------------------------------------------------------

def weight_files(path: Path) -> dict[str, Path]:
    """Map every tensor name to the file holding it, from the index or the single file."""
    index = path / SAFETENSORS_INDEX
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise CheckpointError(f"{index}: not a valid safetensors index ({e})") from e
        return {name: path / file for name, file in weight_map.items()}
    single = path / SAFETENSORS_SINGLE
    if not single.exists():
        raise CheckpointError(f"{path}: no {SAFETENSORS_SINGLE} or {SAFETENSORS_INDEX} found")
    with _open(single) as f:
        return {name: single for name in f.keys()}


@contextmanager
def _open(file: Path) -> Iterator:
    try:
        handle = safe_open(str(file), framework="pt", device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{file}: unreadable safetensors file ({e})") from e
    # safe_open's handle is a context manager; entering it keeps the mmap open for the block.
    with handle as f:
        yield f


def tensor_shapes(path: Path) -> dict[str, tuple[list[int], str]]:
    """Name -> (shape, dtype) for every tensor of a checkpoint, read from headers only (no weights)."""
    out: dict[str, tuple[list[int], str]] = {}
    by_file: dict[Path, list[str]] = {}
    for name, file in weight_files(path).items():
        by_file.setdefault(file, []).append(name)
    for file, names in by_file.items():
        with _open(file) as f:
            for name in names:
                sl = f.get_slice(name)
                out[name] = (list(sl.get_shape()), sl.get_dtype())
    return out


def expected_shapes(model: MiMoForCausalLM) -> dict[str, torch.Size]:
    """The tensors a checkpoint must hold for this model (a tied head is stored once, as the embedding)."""
    return {name: p.shape for name, p in model.named_parameters()}  # named_parameters() skips tied duplicates


def load_model(path: str | Path, dtype: torch.dtype | str | None = None,
               device: torch.device | str = "cpu") -> MiMoForCausalLM:
    """Load a MiMo or Qwen2 checkpoint folder. dtype=None keeps each tensor's stored dtype."""
    path = Path(path)
    config = MiMoConfig.from_json(path)
    with torch.device("meta"):
        model = MiMoForCausalLM(config)
    _stream_tensors(model, path, resolve_dtype(dtype), torch.device(device), assign=True)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    model.model.rotary.reset(torch.device(device))
    return model.eval()


def load_weights_into(model: MiMoForCausalLM, path: str | Path) -> None:
    """Copy a checkpoint's weights into an existing model in place (same names and shapes required):
    how a running server takes the weights an RL trainer just wrote."""
    with torch.no_grad():
        _stream_tensors(model, Path(path), None, model.device, assign=False)


def _stream_tensors(model: MiMoForCausalLM, path: Path, dtype: torch.dtype | None, device: torch.device,
                    assign: bool) -> None:
    """Check every tensor of the checkpoint at `path` against `model`, then stream them in one by one
    (assigning new parameters, or copying into the existing ones)."""
    config = model.config
    expected = expected_shapes(model)
    files = {n: f for n, f in weight_files(path).items() if not n.endswith(_IGNORED_SUFFIXES)}

    missing = sorted(set(expected) - set(files))
    if missing:
        raise CheckpointError(f"{path}: missing tensor {missing[0]!r}" + (
            f" (and {len(missing) - 1} more)" if len(missing) > 1 else "") + f" required by {path / 'config.json'}")
    unexpected = sorted(set(files) - set(expected))
    if unexpected:
        raise CheckpointError(
            f"{files[unexpected[0]]}: tensor {unexpected[0]!r} is not part of the model described by "
            f"{path / 'config.json'} (num_hidden_layers={config.num_hidden_layers}, "
            f"num_nextn_predict_layers={config.num_nextn_predict_layers})")

    by_file: dict[Path, list[str]] = {}
    for name, file in files.items():
        by_file.setdefault(file, []).append(name)
    for file, names in by_file.items():  # every shape is checked before the first tensor is written
        with _open(file) as f:
            for name in names:
                shape = list(f.get_slice(name).get_shape())
                if shape != list(expected[name]):
                    raise CheckpointError(f"{file}: tensor {name!r} has shape {shape}, but {path / 'config.json'} "
                                          f"implies {list(expected[name])}")
    for file, names in by_file.items():
        with _open(file) as f:
            for name in names:
                try:
                    tensor = f.get_tensor(name)
                except (SafetensorError, RuntimeError, ValueError) as e:
                    raise CheckpointError(f"{file}: cannot read tensor {name!r} ({e})") from e
                if assign:
                    _assign(model, name, tensor.to(device=device, dtype=dtype or tensor.dtype))
                else:
                    model.get_parameter(name).copy_(tensor)
                del tensor  # drop the mmap-backed copy before reading the next tensor


def _assign(model: torch.nn.Module, name: str, tensor: torch.Tensor) -> None:
    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name)
    setattr(module, leaf, torch.nn.Parameter(tensor, requires_grad=tensor.is_floating_point()))


# ---- writing -------------------------------------------------------------------------------------

@contextmanager
def atomic_directory(path: str | Path, keep_old_files: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it replaces `path` in one rename.

    A crash at any point leaves either the old folder or the new one at `path`, never a mix; the
    hidden temporary folder it may leave behind starts with '.' so checkpoint discovery skips it.
    With keep_old_files, files of an existing `path` that the new content does not write (say, a
    tokenizer next to the weights) are carried over, except stale weight shards.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        if keep_old_files and path.is_dir():
            for old in path.iterdir():
                stale_weights = old.suffix == ".safetensors" or old.name == SAFETENSORS_INDEX
                if old.is_file() and not stale_weights and not (tmp / old.name).exists():
                    shutil.copy2(old, tmp / old.name)
        _fsync_tree(tmp)
        if path.exists():
            trash = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
            path.rename(trash)
            tmp.rename(path)
            shutil.rmtree(trash)
        else:
            tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync_tree(folder: Path) -> None:
    for file in folder.rglob("*"):
        if file.is_file():
            with open(file, "rb") as f:
                os.fsync(f.fileno())


def save_model(model: MiMoForCausalLM, path: str | Path, max_shard_size: int | str = "5GB",
               dtype: torch.dtype | str | None = None) -> None:
    """Write config.json and safetensors weights (sharded above max_shard_size) atomically."""
    dtype = resolve_dtype(dtype) or model.dtype
    limit = parse_size(max_shard_size)
    params = list(model.named_parameters())  # tied weights appear once, as in HF checkpoints
    shards: list[list[tuple[str, torch.Tensor]]] = [[]]
    shard_bytes = 0
    for name, p in params:
        nbytes = p.numel() * dtype.itemsize
        if shards[-1] and shard_bytes + nbytes > limit:
            shards.append([])
            shard_bytes = 0
        shards[-1].append((name, p))
        shard_bytes += nbytes

    config = MiMoConfig.from_dict({**model.config.to_dict(), "torch_dtype": str(dtype).removeprefix("torch.")})
    with atomic_directory(path, keep_old_files=True) as tmp:
        config.to_json(tmp / "config.json")
        names = ([SAFETENSORS_SINGLE] if len(shards) == 1 else
                 [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
        weight_map, total = {}, 0
        for file, shard in zip(names, shards):
            # One shard at a time in the target dtype keeps the extra memory to one shard.
            tensors = {n: p.detach().to(device="cpu", dtype=dtype).contiguous() for n, p in shard}
            save_file(tensors, str(tmp / file), metadata={"format": "pt"})
            weight_map.update({n: file for n in tensors})
            total += sum(t.numel() * t.element_size() for t in tensors.values())
        if len(shards) > 1:
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (tmp / SAFETENSORS_INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


# ---- `mimo info` ---------------------------------------------------------------------------------

def info(path: str) -> None:
    """Print a checkpoint's config, parameter counts (trunk and MTP), dtypes and tensor count.

    PATH is a checkpoint folder or a preset name (mimo-7b, mimo-2m, mimo-10m, mimo-50m)."""
    from rich.console import Console
    from rich.table import Table

    from mimo.config import PRESETS

    console = Console()
    if Path(path).is_dir():
        config = MiMoConfig.from_json(path)
        shapes = tensor_shapes(Path(path))
        source = f"checkpoint {path}"
    elif path in PRESETS:
        config = MiMoConfig.from_preset(path)
        with torch.device("meta"):
            model = MiMoForCausalLM(config)
        shapes = {n: (list(p.shape), config.torch_dtype) for n, p in model.named_parameters()}
        source = f"preset {path} (not materialised)"
    else:
        raise SystemExit(f"error: {path!r} is neither a checkpoint folder nor a preset ({', '.join(PRESETS)})")

    counts = {"trunk": 0, "mtp": 0}
    dtypes: dict[str, int] = {}
    for name, (shape, dt) in shapes.items():
        numel = 1
        for d in shape:
            numel *= d
        counts["mtp" if name.startswith("model.mtp_layers.") else "trunk"] += numel
        dtypes[str(dt)] = dtypes.get(str(dt), 0) + 1

    table = Table(title=f"mimo info: {source}", show_header=False)
    for key, value in config.to_dict().items():
        table.add_row(key, json.dumps(value))
    console.print(table)
    console.print(f"parameters: trunk {counts['trunk']:,}  mtp {counts['mtp']:,}  "
                  f"total {counts['trunk'] + counts['mtp']:,}")
    console.print(f"tensors: {len(shapes)}  dtypes: {', '.join(f'{k} x{v}' for k, v in sorted(dtypes.items()))}")
