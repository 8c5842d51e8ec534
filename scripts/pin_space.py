"""Pin the app to Hub commits: write space/README.md's `models:` and `preload_from_hub:` from the model repos.

    python scripts/pin_space.py NAMESPACE                   # each <NAMESPACE>/rnn-zoo-<model> at its main
    python scripts/pin_space.py NAMESPACE --revision v1     # at a tag or branch, resolved to its commit now
    python scripts/pin_space.py --unpin                     # back to the bundled weights only

The app (space/loader.py) loads from the Hub only the repos listed there, at the commit listed, and the
Spaces platform downloads exactly those files into the Hub cache when it builds the Space. A model whose repo
does not exist (or lacks a model folder) is left out, and says so: the app then uses its bundled weights.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from huggingface_hub import HfApi, SpaceCard
from huggingface_hub.errors import HfHubHTTPError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout: zoo need not be installed
from zoo.card import repo_name  # noqa: E402
from zoo.checkpoint import CONFIG, WEIGHTS  # noqa: E402
from zoo.hub import FILES  # noqa: E402
from zoo.models import list_models  # noqa: E402

README = Path(__file__).resolve().parents[1] / "space" / "README.md"


def pins(namespace: str, revision: str | None, models: list[str]) -> tuple[list[str], list[str]]:
    """`preload_from_hub` entries (`repo files commit`) of the repos that hold a model folder, and what was
    left out and why."""
    api, entries, skipped = HfApi(), [], []
    for name in models:
        repo = f"{namespace}/{repo_name(name)}"
        try:
            info = api.model_info(repo, revision=revision)
        except HfHubHTTPError as e:   # no such repo or revision included
            skipped.append(f"{repo}: {str(e).splitlines()[0]}")
            continue
        present = {s.rfilename for s in info.siblings or []}
        if not {CONFIG, WEIGHTS} <= present:
            skipped.append(f"{repo}: no {CONFIG} and {WEIGHTS} at {info.sha}")
            continue
        entries.append(f"{repo} {','.join(f for f in FILES if f in present)} {info.sha}")
    return entries, skipped


def write(readme: Path, entries: list[str]) -> None:
    """Set the card's `models` (the repos) and `preload_from_hub` (the entries); none removes both."""
    card = SpaceCard.load(readme)
    for key in ("models", "preload_from_hub"):
        card.data.pop(key, None)
    if entries:
        card.data.models = [entry.split()[0] for entry in entries]
        card.data.preload_from_hub = entries
    card.save(readme)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("namespace", nargs="?", help="the Hub user or organisation that owns the model repos")
    p.add_argument("--revision", help="branch, tag or commit to pin (default: main)")
    p.add_argument("--unpin", action="store_true", help="remove every pin: the app uses the bundled weights")
    p.add_argument("--readme", type=Path, default=README, help=f"the Space's card (default: {README})")
    args = p.parse_args(argv)
    if bool(args.namespace) == args.unpin:
        p.error("give a NAMESPACE to pin, or --unpin")
    entries, skipped = ([], []) if args.unpin else pins(args.namespace, args.revision, list_models())
    write(args.readme, entries)
    for entry in entries:
        print(f"pinned {entry}")
    for line in skipped:
        print(f"left out {line}", file=sys.stderr)
    print(f"{args.readme}: {len(entries)} model{'s' * (len(entries) != 1)} pinned to the Hub, the others bundled")
    return 0


if __name__ == "__main__":
    sys.exit(main())
