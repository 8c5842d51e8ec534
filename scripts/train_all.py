"""Train every registered model with one recipe, write one folder per model with its card, compare them in
REPORT.md, and optionally publish each one to the Hugging Face Hub.

    python scripts/train_all.py --recipe modern                       # every model into weights/
    python scripts/train_all.py --models rnn,ngram --epochs 1 --out runs/try
    python scripts/train_all.py --push --namespace NAME                # and one Hub repo per model
    python scripts/train_all.py --push --namespace NAME --dry-run      # what would be trained / pushed where
    python scripts/train_all.py --report-only                          # rebuild cards and REPORT.md

Each model folder `OUT/<model>/` is also its run folder: the resumable checkpoint lives there while the model
trains (and is removed once the folder is complete, unless --keep-checkpoints). Run the same command again
after an interruption: finished models are skipped (--overwrite retrains them), an interrupted one resumes from
its checkpoint. A folder holding any other model is left alone unless --overwrite is given. A model that fails
is reported in one line and the others go on; the exit status is then 1.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout: zoo need not be installed
from zoo import checkpoint as ckpt  # noqa: E402
from zoo.card import duration, repo_name, write_card  # noqa: E402
from zoo.cli import EXPECTED_ERRORS, pick_device  # noqa: E402
from zoo.data import Tokenizer, load_corpus  # noqa: E402
from zoo.fit import METRICS, clear, fit, fit_ngram_run, held  # noqa: E402
from zoo.hub import HubError, artefacts, push  # noqa: E402
from zoo.models import BOOK, create_model, list_models  # noqa: E402
from zoo.tokenizer import MODES  # noqa: E402
from zoo.recipes import RECIPES, Recipe, recipe_for  # noqa: E402
from zoo.report import write_report  # noqa: E402
from zoo.train import STATE_FILE, Trainer, read_state  # noqa: E402

BUNDLED = Path(__file__).resolve().parents[1] / "weights"


def say(line: str) -> None:
    """One line on stdout that does not break the progress bars."""
    tqdm.write(line, file=sys.stdout)


def one_line(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return text if isinstance(e, EXPECTED_ERRORS) else f"{type(e).__name__}: {text}"


# ---------------------------------------------------------------------------- state of a model folder

def is_done(folder: Path) -> bool:
    """A complete model folder: config.json (written last) holds the final metrics and the checksum of the
    weights beside it, and a network's history is written."""
    try:
        info = ckpt.load_json(folder / ckpt.CONFIG)
        same = info.get(ckpt.SHA256) == ckpt.sha256_of(folder / ckpt.WEIGHTS)
    except (ckpt.CheckpointError, OSError):
        return False
    return same and "metrics" in info and (info["model"].get("arch") == "ngram" or (folder / METRICS).is_file())


def plan(name: str, folder: Path, overwrite: bool) -> str:
    """What a run does with this model: "skip", "resume", "train", or "refuse" (a folder that holds a model
    which is neither finished nor resumable: its files are not this script's to replace unless told)."""
    if overwrite:
        return "train"
    if is_done(folder):
        return "skip"
    if name != "ngram" and (folder / STATE_FILE).is_file():
        return "resume"
    return "refuse" if held(folder) else "train"


def refused(folder: Path) -> str:
    return (f"{folder} holds a model that is not a finished run of this recipe ({', '.join(held(folder))}); "
            f"--overwrite replaces it")


# ---------------------------------------------------------------------------- training

class Corpora:
    """The corpus, tokenized once per vocabulary (a resumed run keeps its checkpoint's tokenizer)."""

    def __init__(self, path: str | None, mode: str):
        self.path, self.mode, self.cache = path, mode, {}

    def get(self, tokenizer: Tokenizer | None = None):
        key = None if tokenizer is None else (tokenizer.mode, tuple(tokenizer.tokens))
        if key not in self.cache:
            self.cache[key] = load_corpus(self.path, self.mode, tokenizer=tokenizer)
        return self.cache[key]


def train_one(name: str, folder: Path, action: str, args, corpora: Corpora, device: torch.device) -> dict:
    """Train (or resume, or count) one model into `folder`; return its final metrics."""
    if action == "train":
        clear(folder)
    if name == "ngram":
        return fit_ngram_run(corpora.get(), folder, args.ngram_max_order, not args.ngram_no_tune)
    overrides = recipe_overrides(args)
    if action == "resume":
        tokenizer = Tokenizer.from_dict(read_state(folder)["tokenizer"])
        corpus = corpora.get(tokenizer)
        trainer = Trainer.resume(folder, corpus.splits, device, **overrides)
        say(f"{name}: resuming from epoch {trainer.epoch} of {trainer.recipe.epochs}")
    else:
        corpus = corpora.get()
        recipe = recipe_for(args.recipe, name, **overrides)
        torch.manual_seed(recipe.seed)
        sizes = {k: v for k, v in (("num_hiddens", args.hidden), ("num_layers", args.layers)) if v is not None}
        model = create_model(name, vocab_size=len(corpus.tokenizer), dropout=recipe.dropout,
                             weight_drop=recipe.weight_drop, **sizes)
        trainer = Trainer(model, corpus.splits, recipe, corpus.tokenizer, name, folder, device)
    metrics = fit(trainer, folder, data=corpus.source)
    if not args.keep_checkpoints:
        (folder / STATE_FILE).unlink(missing_ok=True)
    return metrics


def skipped(name: str, folder: Path, args) -> str:
    """Why a finished model is not trained again, naming the recipe settings it differs in from this run's."""
    differs = []
    if name != "ngram":
        done = ckpt.load_json(folder / ckpt.CONFIG).get("recipe", {})
        asked = recipe_for(args.recipe, name, **recipe_overrides(args)).to_dict()
        differs = [k for k, v in asked.items() if done.get(k, v) != v]
    other = f" (trained with another {', '.join(differs)})" if differs else ""
    return f"done in {folder}{other}, skipped (--overwrite retrains)"


def summary(name: str, m: dict) -> str:
    speed = f"  {m['tokens_per_sec']:,.0f} tok/s" if m.get("tokens_per_sec") else ""
    return (f"{name}: train ppl {m['train_perplexity']:.3f}  valid ppl {m['valid_perplexity']:.3f}  "
            f"test ppl {m['test_perplexity']:.3f}{speed}  {duration(m['train_seconds'])} on {m['device']}")


# ---------------------------------------------------------------------------- the commands

def size(nbytes: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if nbytes < 1000 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000


def dry_run(args, models: list[str]) -> int:
    """Print what would be trained and what would be pushed where; touch nothing, no network."""
    for name in models:
        folder = args.out / name
        action = "rebuild card" if args.report_only else plan(name, folder, args.overwrite)
        detail = {"resume": "resume from its checkpoint",
                  "train": f"train ({'counts' if name == 'ngram' else args.recipe + ' recipe'})"}.get(action, action)
        if action == "skip":
            detail = skipped(name, folder, args)
        elif action == "refuse":
            detail = f"refuse: {refused(folder)}"
        print(f"{name:20s} {detail}" + ("" if action == "skip" else f" -> {folder}"))
        if args.push:
            files = artefacts(folder) if is_done(folder) else {}
            print(f"  push to {repo_id(args, name)}" + ("" if files else " (after training)"))
            for file, path in files.items():
                print(f"    {file:20s} {size(path.stat().st_size):>10s}")
    print(f"report -> {args.out / 'REPORT.md'}")
    return 0


def repo_id(args, name: str) -> str | None:
    return f"{args.namespace}/{repo_name(name, args.repo_pattern)}" if args.namespace else None


def run(args, models: list[str]) -> int:
    """Train what is not done, write cards and the report, push; 1 if any model failed."""
    failed: dict[str, str] = {}
    corpora, device = Corpora(args.data, args.tokens), pick_device(args.device)
    progress = sys.stderr.isatty()
    if not args.report_only and "train" in (plan(name, args.out / name, args.overwrite) for name in models):
        corpora.get()   # an unreadable corpus stops everything here, in one line, rather than once per model
    for name in tqdm(models, desc="models", unit="model", disable=not progress or args.report_only):
        folder = args.out / name
        action = "card" if args.report_only else plan(name, folder, args.overwrite)
        try:
            if action == "skip":
                say(f"{name}: {skipped(name, folder, args)}")
            elif action == "refuse":
                raise ckpt.CheckpointError(refused(folder))
            elif action in ("train", "resume"):
                say(summary(name, train_one(name, folder, action, args, corpora, device)))
            if is_done(folder):
                write_card(folder, repo_id(args, name))
            elif args.report_only:
                say(f"{name}: no finished model in {folder}, no card")
        except KeyboardInterrupt:
            say(f"interrupted during {name}; run the same command again to resume from its last checkpoint")
            return 130
        except Exception as e:   # one model's failure must not stop the others
            failed[name] = one_line(e)
            say(f"{name}: FAILED: {failed[name]}")
    say(f"report: {write_report(args.out)}")
    if args.push:
        for name in models:
            if name in failed or not is_done(args.out / name):
                continue
            try:
                test = ckpt.load_json(args.out / name / ckpt.CONFIG)["metrics"]["test_perplexity"]
                result = push(args.out / name, repo_id(args, name), private=args.private,
                              message=f"rnn-zoo {name}: test perplexity {test:.3f}")
                say(f"{name}: {result.repo_id} unchanged, skipped" if result.unchanged else
                    f"{name}: pushed {', '.join(result.changed)} to {result.repo_id} (commit {result.commit[:8]})")
            except (HubError, ckpt.CheckpointError) as e:
                failed[name] = str(e)
                say(f"{name}: push FAILED: {e}")
    if failed:
        say(f"{len(failed)} of {len(models)} failed: {', '.join(failed)}")
    return 1 if failed else 0


# ---------------------------------------------------------------------------- arguments

RECIPE_FLAGS = {f.name: f for f in fields(Recipe)}


def recipe_overrides(args) -> dict:
    """The recipe settings given on the command line."""
    return {k: v for k, v in vars(args).items() if k in RECIPE_FLAGS and v is not None}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", help=f"comma-separated names (default: the book's: {','.join(BOOK)})")
    p.add_argument("--recipe", choices=list(RECIPES), default="book", help="book or modern (default: book)")
    p.add_argument("--out", type=Path, default=BUNDLED, help=f"one folder per model in it (default: {BUNDLED})")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--data", help="a UTF-8 text file (default: the Time Machine)")
    p.add_argument("--tokens", choices=MODES, default="book", help="tokenizer: book, chars or words (default: book)")
    p.add_argument("--hidden", type=int, help="hidden units of every network (default: 256)")
    p.add_argument("--layers", type=int, help="recurrent layers (default: 1, 2 for deep models)")
    p.add_argument("--overwrite", action="store_true",
                   help="retrain models whose folders in --out already hold a model, replacing them")
    p.add_argument("--ngram-max-order", type=int, default=12, help="the n-gram tries orders 2..N (default: 12)")
    p.add_argument("--ngram-no-tune", action="store_true", help="keep Chen & Goodman's discounts (faster)")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep each finished run's resumable checkpoint")
    p.add_argument("--report-only", action="store_true", help="only rebuild the cards and REPORT.md from --out")
    hub = p.add_argument_group("the Hub")
    hub.add_argument("--push", action="store_true", help="create or update one Hub model repo per model")
    hub.add_argument("--namespace", help="Hub user or organisation that owns the repos")
    hub.add_argument("--repo-pattern", default="rnn-zoo-{model}", help="repo name (default: rnn-zoo-{model})")
    hub.add_argument("--private", action="store_true", help="create new repos as private")
    hub.add_argument("--dry-run", action="store_true", help="print what would be trained and pushed where, and stop")
    recipe = p.add_argument_group("recipe settings (default: the chosen recipe's)")
    for f in fields(Recipe):
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            recipe.add_argument(flag, action="store_true", default=None, help=f.metadata["help"])
        else:
            recipe.add_argument(flag, type={"int": int, "float": float, "str": str}[f.type], metavar="X",
                                help=f.metadata["help"])
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else BOOK
    unknown = [m for m in models if m not in list_models()]
    if unknown:
        p.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(list_models())}")
    if args.push and not args.namespace:
        p.error("--push needs --namespace (the Hub user or organisation)")
    if "{model}" not in args.repo_pattern:
        p.error("--repo-pattern must contain {model}")
    if args.dry_run:
        return dry_run(args, models)
    if args.push:
        from huggingface_hub import get_token
        if not get_token():   # fail now, not after hours of training
            p.exit(2, "train_all: --push needs a Hub token: set HF_TOKEN or log in with `hf auth login`\n")
    try:
        return run(args, models)
    except EXPECTED_ERRORS as e:   # e.g. the corpus cannot be read: nothing can train
        print(f"train_all: {one_line(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
