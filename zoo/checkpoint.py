"""Files on disk, safetensors and JSON only (never pickle), written atomically.

A model folder is `model.safetensors` + `config.json`:

    {"name": "lstm", "model": {ModelConfig}, "tokenizer": {"mode", "tokens"}, "recipe": {...}, "metrics": {...}}

so a folder (or a Hub repo holding one) is enough to rebuild the model with its vocabulary.
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from zoo.data import Tokenizer
from zoo.models import model_from_config

WEIGHTS, CONFIG = "model.safetensors", "config.json"


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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_tensors(path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write(path, save_bytes(tensors, metadata=metadata))


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
    atomic_write(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def load_json(path) -> dict:
    path = Path(path)
    try:
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
    """Write `model.safetensors` and `config.json` into `folder`; `info` adds e.g. recipe=..., metrics=...."""
    folder = Path(folder)
    save_tensors(folder / WEIGHTS, model.state_dict(), metadata={"format": "pt"})
    save_json(folder / CONFIG, {"name": name, "model": model.config.to_dict(),
                                "tokenizer": tokenizer.to_dict(), **info})
    return folder


def load_model(folder, device: str | torch.device = "cpu") -> Pretrained:
    """Rebuild a model from a folder, strictly: every tensor present, none extra, every shape right."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a model folder (expected {CONFIG} and {WEIGHTS} in it)")
    info = load_json(folder / CONFIG)
    try:
        tokenizer = Tokenizer.from_dict(info["tokenizer"])
        model = model_from_config(info["model"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{folder / CONFIG} does not describe a model ({e})") from None
    if model.config.vocab_size != len(tokenizer):
        raise CheckpointError(f"{folder / CONFIG}: vocab_size {model.config.vocab_size} "
                              f"but {len(tokenizer)} tokens")
    load_state_strict(model, load_tensors(folder / WEIGHTS), folder / WEIGHTS)
    model.to(device).eval()
    return Pretrained(info["name"], model, tokenizer, info, str(folder))


def load_state_strict(model: torch.nn.Module, tensors: dict[str, torch.Tensor], where) -> None:
    """`load_state_dict(strict=True)` with shapes checked first and one readable line on mismatch."""
    expected = model.state_dict()
    missing, extra = expected.keys() - tensors.keys(), tensors.keys() - expected.keys()
    if missing or extra:
        raise CheckpointError(f"{where} does not match the config: missing {sorted(missing)[:3]}, "
                              f"unexpected {sorted(extra)[:3]}")
    for key, value in expected.items():
        if value.shape != tensors[key].shape:
            raise CheckpointError(f"{where}: {key} has shape {tuple(tensors[key].shape)}, "
                                  f"config needs {tuple(value.shape)}")
    model.load_state_dict(tensors, strict=True)
