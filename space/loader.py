"""The page's models, loaded once at start-up: the bundled weights folder, or a Hub repo at a commit that the
deployment pins.

The Hub is trusted only as far as the Space's README says: its `preload_from_hub` entries, each a repo, its
files and a 40-hex commit (the Spaces platform downloads them into the Hub cache when it builds the Space).
A model with such an entry is loaded from that commit; any other model, and a pinned one whose commit cannot
be had, from `weights/<model>`. Nothing here raises: a model that cannot be loaded becomes a `Slot` holding
the reason in one line, which its panel shows while the rest of the page works.
"""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from huggingface_hub import SpaceCard

from zoo.card import repo_name
from zoo.checkpoint import CheckpointError, Pretrained, load_json, load_model
from zoo.fit import METRICS
from zoo.hub import download

COMMIT = re.compile(r"[0-9a-f]{40}")


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


@dataclass(frozen=True)
class Pin:
    """A Hub repo that the Space's README names, and the commit it pins (None: it pins none)."""
    repo: str
    commit: str | None


def hub_pins(readme: str | Path) -> dict[str, Pin]:
    """The `preload_from_hub` entries of a Space's README (`repo [files] [commit]`), by repo name
    (`rnn-zoo-gru`): the only Hub repos the app loads from, and only at their commit."""
    entries = SpaceCard.load(readme).data.to_dict().get("preload_from_hub") or []
    pins = {}
    for entry in entries:
        repo, *rest = str(entry).split()
        commit = rest[-1] if rest and COMMIT.fullmatch(rest[-1]) else None
        pins[repo.split("/")[-1]] = Pin(repo, commit)
    return pins


def one_line(e: BaseException) -> str:
    """An exception as one line for a panel: our own errors say what is wrong; others also say what they are."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return text if isinstance(e, CheckpointError) else f"{type(e).__name__}: {text}"


def from_folder(name: str, folder: Path, source: str, device: torch.device) -> Slot:
    """A loaded slot; `metrics.json` is optional (the n-gram has no per-epoch history)."""
    pretrained = load_model(folder, device)
    history = load_json(folder / METRICS).get("history", []) if (folder / METRICS).is_file() else []
    return Slot(name, source, pretrained, history=history)


def load_slot(name: str, pin: Pin | None, weights: Path, device: torch.device) -> Slot:
    """The pinned Hub commit when there is one and it can be had, else `weights/<name>`, else the reason."""
    why_not_hub = "no Hub commit is pinned for it"
    if pin and not pin.commit:
        why_not_hub = f"{pin.repo} is listed without a commit, so it is not trusted"
    elif pin:
        try:
            return from_folder(name, download(pin.repo, pin.commit), f"from the Hub: {pin.repo}@{pin.commit[:10]}",
                               device)
        except Exception as e:   # whatever a repo holds, it must not stop the page: the bundled weights follow
            why_not_hub = f"{pin.repo}@{pin.commit[:10]}: {one_line(e)}"
    folder = Path(weights) / name
    source = f"bundled weights {folder} ({why_not_hub})"
    try:
        return from_folder(name, folder, source, device)
    except Exception as e:   # a folder of unknown content: whatever it raises belongs in its panel
        return Slot(name, source, error=one_line(e))


def load_zoo(names: list[str], pins: dict[str, Pin], weights: Path, device: torch.device) -> dict[str, Slot]:
    """Every model in `names`, loaded side by side (the Hub downloads overlap), in the order given."""
    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        slots = pool.map(lambda name: load_slot(name, pins.get(repo_name(name)), weights, device), names)
        return {slot.name: slot for slot in slots}
