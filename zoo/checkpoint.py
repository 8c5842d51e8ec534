"""Files on disk, safetensors and JSON only (never pickle), written atomically.

A model folder is `model.safetensors` + `config.json`:

    {"name": "lstm", "model": {ModelConfig}, "tokenizer": {"mode", "tokens"}, "recipe": {...}, "metrics": {...},
     "weights_sha256": "..."}

so a folder (or a Hub repo holding one) is enough to rebuild the model with its vocabulary. config.json is
written last and records the sha256 of the weights: it is the folder's commit point, so a kill between the
two writes leaves a folder that refuses to load instead of new weights under an old config.

Loading trusts nothing in the folder: the config is checked against sane bounds and the weights' header
against the config before anything is allocated, then the weights' checksum, then their values (NaN or
infinite values are refused). Every refusal is one CheckpointError line that names the file.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from zoo.tokenizer import Tokenizer
from zoo.models import create_model, model_from_config

WEIGHTS, CONFIG = "model.safetensors", "config.json"
SHA256 = "weights_sha256"    # the config.json key that records the sha256 of model.safetensors
# What a config.json may ask for (config key -> largest value); loading and `zoo train` refuse more.
BOUNDS = {"vocab_size": 1 << 20, "num_hiddens": 8192, "num_layers": 16}
MAX_MODEL_BYTES = 1 << 30    # parameters and buffers of one model
MAX_CONFIG_BYTES = 64 << 20  # a config.json (a word vocabulary of a large corpus fits)
TEMPORARY = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")   # what `atomic_write` names its temporary files


class CheckpointError(RuntimeError):
    """A model folder or checkpoint that cannot be read; the message names the file and what is wrong."""


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: readers see old or new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())   # mkstemp makes files private; these are meant to be shared
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that writes in `folder` left when their process was killed; return them."""
    folder = Path(folder)
    found = [p for p in folder.iterdir() if TEMPORARY.fullmatch(p.name) and p.is_file()] if folder.is_dir() else []
    for path in found:
        path.unlink(missing_ok=True)
    return found


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_tensors(path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> str:
    """Write a safetensors file atomically; return its sha256."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    data = save_bytes(tensors, metadata=metadata)
    atomic_write(path, data)
    return hashlib.sha256(data).hexdigest()


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_tensors(path) -> dict[str, torch.Tensor]:
    """Read a whole safetensors file; any failure is one CheckpointError line."""
    path = Path(path)
    with _one_line_errors(path):
        return load_bytes(path.read_bytes())


def load_metadata(path) -> dict[str, str]:
    """The string metadata in a safetensors file's header, read without loading its tensors."""
    path = Path(path)
    with _one_line_errors(path), safe_open(path, "pt") as f:
        return f.metadata() or {}


@contextmanager
def _one_line_errors(path: Path):
    """Turn every failure to read the safetensors file at `path` into one CheckpointError line."""
    try:
        yield
    except FileNotFoundError:
        raise CheckpointError(f"missing {path.name} in {path.parent}") from None
    except (SafetensorError, ValueError, OSError) as e:
        raise CheckpointError(f"{path} is corrupt or truncated ({str(e).splitlines()[0]})") from None


def save_json(path, obj) -> None:
    """Write strict JSON (a NaN or infinity is a ValueError, never the invalid `NaN` token) atomically."""
    atomic_write(path, (json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n").encode())


def load_json(path, max_bytes: int = MAX_CONFIG_BYTES) -> dict:
    path = Path(path)
    try:
        if path.stat().st_size > max_bytes:
            raise CheckpointError(f"{path} is {path.stat().st_size:,} bytes; the bound is {max_bytes:,}")
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"missing {path.name} in {path.parent}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})") from None


# ---------------------------------------------------------------------------- model folders

@dataclass
class Pretrained:
    """A loaded model with its vocabulary and what its folder says about it."""
    name: str
    model: torch.nn.Module
    tokenizer: Tokenizer
    info: dict = field(default_factory=dict)   # the whole config.json: recipe, metrics, ...
    source: str = ""                            # where it was loaded from (a path or a Hub id)


def save_model(folder, name: str, model, tokenizer: Tokenizer, **info) -> Path:
    """Write `model.safetensors`, then `config.json` with its sha256 (the commit point); `info` adds e.g.
    recipe=..., metrics=...."""
    folder = Path(folder)
    sha256 = save_tensors(folder / WEIGHTS, model.state_dict(), metadata={"format": "pt"})
    save_json(folder / CONFIG, {"name": name, "model": model.config.to_dict(), "tokenizer": tokenizer.to_dict(),
                                **info, SHA256: sha256})
    return folder


def record_sha256(folder) -> str:
    """Record the sha256 of the folder's weights in its config.json, as they are now; return it. For
    folders written before config.json recorded it, and weights replaced on purpose (scripts/stamp_weights.py)."""
    folder = Path(folder)
    info = load_json(folder / CONFIG)
    if not (folder / WEIGHTS).is_file():
        raise CheckpointError(f"missing {WEIGHTS} in {folder}")
    info[SHA256] = sha256_of(folder / WEIGHTS)
    save_json(folder / CONFIG, info)
    return info[SHA256]


def load_model(folder, device: str | torch.device = "cpu") -> Pretrained:
    """Rebuild a model from a folder, strictly: the config within bounds, every tensor present with the
    config's shape and dtype, none extra, the checksum the config records, every value finite."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a model folder (expected {CONFIG} and {WEIGHTS} in it)")
    where = folder / CONFIG
    info = load_json(where)
    if not isinstance(info, dict) or not isinstance(info.get("name"), str) or not info["name"]:
        raise CheckpointError(f"{where} names no model (a \"name\" string)")
    try:
        tokenizer = Tokenizer.from_dict(info.get("tokenizer"))
    except ValueError as e:
        raise CheckpointError(f"{where}: bad tokenizer: {e}") from None
    expected = check_config(info.get("model"), where)
    if expected["vocab_size"] != len(tokenizer):
        raise CheckpointError(f"{where}: vocab_size {expected['vocab_size']} but {len(tokenizer)} tokens")
    tensors = read_weights(folder / WEIGHTS, expected["state"], info.get(SHA256))
    model = model_from_config(info["model"])
    model.load_state_dict(tensors, strict=True)
    model.to(device).eval()
    return Pretrained(info["name"], model, tokenizer, info, str(folder))


def check_config(config, where) -> dict:
    """Refuse a model config beyond BOUNDS or MAX_MODEL_BYTES, naming the bound, before anything is allocated
    (the model is built on the meta device); return its vocab_size and its state's shapes and dtypes."""
    if not isinstance(config, dict):
        raise CheckpointError(f"{where} does not describe a model (no \"model\" object)")
    for key, bound in BOUNDS.items():
        value = config.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > bound:
            raise CheckpointError(f"{where}: {key} {value:,} is beyond the bound of {bound:,} (zoo.checkpoint.BOUNDS)")
    try:
        with torch.device("meta"):
            model = model_from_config(config)
    except (KeyError, TypeError, ValueError, OverflowError, RuntimeError) as e:
        raise CheckpointError(f"{where} does not describe a model ({str(e).splitlines()[0]})") from None
    state = model.state_dict()
    size = sum(t.numel() * t.element_size() for t in state.values())
    if size > MAX_MODEL_BYTES:
        raise CheckpointError(f"{where}: the model would take {size / 2**20:,.0f} MiB; the bound is "
                              f"{MAX_MODEL_BYTES >> 20:,} MiB (zoo.checkpoint.MAX_MODEL_BYTES)")
    return {"vocab_size": model.config.vocab_size, "state": state}


def create_within_bounds(name: str, where: str, **overrides) -> torch.nn.Module:
    """`create_model(name, **overrides)`, refused (before anything is allocated) beyond the bounds loading keeps."""
    with torch.device("meta"):
        planned = create_model(name, **overrides)
    check_config(planned.config.to_dict(), where)
    return create_model(name, **overrides)


def read_weights(path: Path, expected: dict[str, torch.Tensor], sha256: str | None) -> dict[str, torch.Tensor]:
    """The tensors of `path` if its header agrees with `expected` (names, shapes: read before any tensor is),
    its content with `sha256`, and its tensors' dtypes and values with what a model can hold."""
    with _one_line_errors(path), safe_open(path, "pt") as f:
        shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    check_layout(expected, shapes, path)
    if not isinstance(sha256, str):
        raise CheckpointError(f"{path.parent / CONFIG} records no {SHA256}; if you trust this folder, record it "
                              f"with scripts/stamp_weights.py {path.parent}")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise CheckpointError(f"{path} is not the file {CONFIG} was written with (sha256 mismatch): the folder "
                              f"was altered, or its writing was cut short (rerun with --resume)")
    with _one_line_errors(path):
        tensors = load_bytes(data)
    for key, value in expected.items():
        tensor = tensors[key]
        if tensor.dtype != value.dtype:
            raise CheckpointError(f"{path}: {key} is {tensor.dtype}, config needs {value.dtype}")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(f"{path}: {key} holds {bad:,} NaN or infinite value{'s' * (bad > 1)}")
    return tensors


def check_layout(expected: dict[str, torch.Tensor], shapes: dict[str, tuple], where) -> None:
    """Refuse tensors whose names or shapes `shapes` are not the ones `expected` has, in one line."""
    missing, extra = expected.keys() - shapes.keys(), shapes.keys() - expected.keys()
    if missing or extra:
        raise CheckpointError(f"{where} does not match the config: missing {sorted(missing)[:3]}, "
                              f"unexpected {sorted(extra)[:3]}")
    for key, value in expected.items():
        if tuple(value.shape) != shapes[key]:
            raise CheckpointError(f"{where}: {key} has shape {shapes[key]}, config needs {tuple(value.shape)}")


def load_state_strict(model: torch.nn.Module, tensors: dict[str, torch.Tensor], where) -> None:
    """`load_state_dict(strict=True)` with shapes checked first and one readable line on mismatch."""
    check_layout(model.state_dict(), {key: tuple(t.shape) for key, t in tensors.items()}, where)
    model.load_state_dict(tensors, strict=True)
