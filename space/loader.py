"""The page's models, loaded once at start-up: each from its Hub repo, else from the bundled weights folder.

Nothing here raises: a model that cannot be loaded becomes a `Slot` holding the error, which its panel
shows while the rest of the page works. The Hub is asked once per process whether it can be reached
(`zoo.hub`), so an offline start falls back to the bundled weights at once.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

from zoo.card import repo_name
from zoo.checkpoint import CheckpointError, Pretrained, load_json, load_model
from zoo.fit import METRICS
from zoo.hub import download


@dataclass
class Slot:
    """One model of the page: loaded, or the reason it is not; where it came from; its training history."""
    name: str
    source: str                                          # a sentence for the page
    pretrained: Pretrained | None = None
    error: str = ""
    history: list[dict] = field(default_factory=list)   # metrics.json's per-epoch log, [] when absent

    @property
    def ok(self) -> bool:
        return self.pretrained is not None


def hub_id(namespace: str, name: str) -> str:
    """The Hub repo of a model, named as scripts/train_all.py pushes it: `rnn-zoo/rnn-zoo-gru`."""
    return f"{namespace}/{repo_name(name)}"


def from_folder(name: str, folder: Path, source: str, device: torch.device) -> Slot:
    """A loaded slot; `metrics.json` is optional (the n-gram has no per-epoch history)."""
    pretrained = load_model(folder, device)
    history = load_json(folder / METRICS).get("history", []) if (folder / METRICS).is_file() else []
    return Slot(name, source, pretrained, history=history)


def load_slot(name: str, namespace: str, weights: Path, device: torch.device) -> Slot:
    """The Hub repo when a namespace is set and it can be had, else `weights/<name>`, else the error."""
    why_not_hub = "no Hub namespace is set"
    if namespace:
        repo = hub_id(namespace, name)
        try:
            return from_folder(name, download(repo), f"from the Hub: {repo}", device)
        except CheckpointError as e:
            why_not_hub = str(e)
    folder = Path(weights) / name
    source = f"bundled weights {folder} ({why_not_hub})"
    try:
        return from_folder(name, folder, source, device)
    except CheckpointError as e:
        return Slot(name, source, error=str(e))
    except Exception as e:   # a folder of unknown content: whatever it raises belongs in its panel
        return Slot(name, source, error=f"{type(e).__name__}: {e}")


def load_zoo(names: list[str], namespace: str, weights: Path, device: torch.device) -> dict[str, Slot]:
    """Every model in `names`, loaded side by side (the Hub downloads overlap), in the order given."""
    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        slots = pool.map(lambda name: load_slot(name, namespace, weights, device), names)
        return {slot.name: slot for slot in slots}
