"""The command line: `python -m zoo list | train | sample | eval` (also installed as `zoo`).

Every failure the user can fix (a wrong path, a corrupt file, a bad option) ends as one line on stderr
and a non-zero exit status, never a traceback: argparse's usage errors too (exit status 2). Options are
checked against the ranges the library can honour before anything runs; `eval --json` is strict JSON.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import fields
from pathlib import Path

import torch
import torch.distributed as dist

from zoo import backends
from zoo import checkpoint as ckpt
from zoo.data import DataError, Tokenizer, encode_file, load_corpus
from zoo.evaluate import score
from zoo.fit import clear, fit, fit_ngram_run, held
from zoo.generate import MAX_LENGTH, generate
from zoo.hub import load
from zoo.models import create_model, describe, list_models
from zoo.recipes import RECIPES, Recipe, recipe_for
from zoo.tokenizer import MODES
from zoo.train import STATE_FILE, Trainer, TrainingError, read_state

EXPECTED_ERRORS = (DataError, ckpt.CheckpointError, TrainingError, ValueError, KeyError, OSError)
MAX_SAMPLES = 100        # continuations per `sample` call: num_samples x length tokens are held at once
SEEDS = 2**64            # torch generators take seeds in [0, 2**64)


def pick_device(name: str) -> torch.device:
    local_rank = int(os.environ.get("LOCAL_RANK", 0))     # set by torchrun: one GPU per process
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available here")
    return torch.device(name)


# ---------------------------------------------------------------------------- commands

def cmd_list(args) -> None:
    for name in list_models():
        params = sum(p.numel() for p in create_model(name).parameters())
        print(f"{name:20s} {params:>9,d} params  {describe(name)}")


RECIPE_FLAGS = {f.name: f for f in fields(Recipe)}


def cmd_train(args) -> None:
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        return distributed(cmd_train_one, args)
    cmd_train_one(args)


def distributed(command, args) -> None:
    """Run `command` in the process group torchrun describes (NCCL between GPUs, gloo between CPUs)."""
    device = pick_device(args.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        command(args)
    finally:
        dist.destroy_process_group()


def cmd_train_one(args) -> None:
    device = pick_device(args.device)
    out = Path(args.out)
    if args.resume and args.overwrite:
        raise ValueError("--resume continues the run in --out and --overwrite replaces it: choose one")
    found = [] if args.resume else held(out)
    if found:
        if not args.overwrite:
            raise TrainingError(f"{out} already holds a model or a run ({', '.join(found)}); pass --resume to "
                                f"continue its run, --overwrite to replace it, or choose another --out")
        clear(out)
    if args.model == "ngram":
        metrics = fit_ngram_run(load_corpus(args.data, args.tokens), out)
        print(f"ngram (order {metrics['order']}): valid ppl {metrics['valid_perplexity']:.3f}  "
              f"test ppl {metrics['test_perplexity']:.3f}  -> {out}")
        return
    overrides = {k: v for k, v in vars(args).items() if k in RECIPE_FLAGS and v is not None}
    if args.resume:
        if not (out / STATE_FILE).exists():
            raise TrainingError(f"nothing to resume in {out} (no {STATE_FILE}); run without --resume")
        tokenizer = Tokenizer.from_dict(read_state(out)["tokenizer"])
        corpus = load_corpus(args.data, tokenizer=tokenizer)
        trainer = Trainer.resume(out, corpus.splits, device, **overrides)
        trainer.model.use_backend(args.backend)
    else:
        recipe = recipe_for(args.recipe, args.model, **overrides)
        corpus = load_corpus(args.data, args.tokens)
        torch.manual_seed(recipe.seed)
        sizes = {k: v for k, v in (("num_hiddens", args.hidden), ("num_layers", args.layers)) if v is not None}
        model = ckpt.create_within_bounds(args.model, "the model asked for", vocab_size=len(corpus.tokenizer),
                                          dropout=recipe.dropout, weight_drop=recipe.weight_drop, **sizes)
        model.use_backend(args.backend)
        trainer = Trainer(model, corpus.splits, recipe, corpus.tokenizer, args.model, out, device)
    try:
        metrics = fit(trainer, out, data=corpus.source)
    except KeyboardInterrupt:
        raise SystemExit(f"interrupted at epoch {trainer.epoch}; `--resume` continues from the last checkpoint in {out}")
    if trainer.rank:
        return
    print(f"{args.model}: train ppl {metrics['train_perplexity']:.3f}  valid ppl {metrics['valid_perplexity']:.3f}"
          f"  test ppl {metrics['test_perplexity']:.3f}  {metrics['tokens_per_sec']:,.0f} tok/s  -> {out}")


def loaded(args):
    """The model `args.source` names, on the device and backend the arguments ask for."""
    pretrained = load(args.source, args.revision, pick_device(args.device))
    if hasattr(pretrained.model, "use_backend"):
        pretrained.model.use_backend(args.backend)
    return pretrained


def cmd_sample(args) -> None:
    pretrained = loaded(args)
    tokenizer = pretrained.tokenizer
    top_k = min(args.top_k, len(tokenizer))      # more than the vocabulary is all of it
    result = generate(pretrained.model, tokenizer, args.prefix, args.length, args.temperature, top_k,
                      args.top_p, args.num_samples, args.seed)
    if result.unknown:
        print(f"note: {''.join(result.unknown)!r} not in the vocabulary, read as <unk>", file=sys.stderr)
    if replaced := tokenizer.replaced(args.prefix):
        print(f"note: {''.join(replaced)!r} not in the vocabulary, read as a space",
              file=sys.stderr)
    for text in result.texts:
        print(text)


def cmd_eval(args) -> None:
    pretrained = loaded(args)
    tokenizer = pretrained.tokenizer
    text = encode_file(args.text_file, tokenizer)
    if len(text.ids) < 2:
        raise ValueError(f"{args.text_file} holds fewer than two tokens that this model reads; nothing to score")
    scored = score(pretrained.model, text.ids)                  # compact ids, read chunk by chunk
    result = {"model": pretrained.name, "source": pretrained.source, **scored.to_dict(),
              "characters": text.characters, "unknown": text.unknown, "read_as_space": text.replaced}
    if args.json:
        print(json.dumps(result, indent=2, allow_nan=False))
        return
    unit = "word" if tokenizer.mode == "words" else "char"
    number = lambda key: "inf" if result[key] is None else f"{result[key]:.3f}"
    print(f"{pretrained.name}: perplexity {number('perplexity')}  bits/{unit} {number('bits_per_token')}  tokens "
          f"{result['tokens']}" + (f"  unknown {''.join(result['unknown'])!r}" if result["unknown"] else "")
          + (f"  ({result['note']})" if "note" in result else ""))


def cmd_exercise(args) -> None:
    from zoo import exercises
    if args.id == "list":
        for e in exercises.EXERCISES:
            note = f"  (needs {e.needs.split(';')[0]})" if e.mixes else ""
            print(f"{e.id:6s} {e.section:20s} {e.question}{note}")
        return
    if args.id != "all" and args.id not in exercises.BY_ID:
        raise ValueError(f"no exercise {args.id!r}; `zoo exercise list` lists them")
    if args.mix and not Path(args.mix).is_file():
        raise ValueError(f"--mix {args.mix}: no such file")
    device = pick_device(args.device)
    jobs = args.jobs or (1 if device.type == "cuda" else max(1, min(2, os.cpu_count() or 1)))
    setup = exercises.Setup(budget=args.budget, device=str(device), jobs=jobs, data=args.data, mix=args.mix,
                              smoke=args.smoke)
    for exercise in exercises.EXERCISES if args.id == "all" else [exercises.BY_ID[args.id]]:
        command = (f"python -m zoo exercise {exercise.id} --budget {args.budget:g}" + (" --smoke" if args.smoke else "")
                   + (f" --mix {Path(args.mix).name}" if args.mix and exercise.mixes else ""))
        print(f"{exercise.id}: {exercise.question}", file=sys.stderr)
        results = exercises.run(exercise, setup, args.out, command, log=lambda line: print(line, file=sys.stderr))
        print(f"{exercise.id}: {results['answer'] or 'not run: ' + exercise.needs}")
    print(f"wrote {Path(args.out)}/ and {Path(args.out).parent / (Path(args.out).name + '.md')}", file=sys.stderr)


# ---------------------------------------------------------------------------- arguments

def backend_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=backends.NAMES, default=os.environ.get(backends.ENV) or "auto",
                   help="what runs the recurrent layers: auto (the fastest here, measured once), step (each cell's "
                        f"own step), torch (torch's layers), kernel (the C++ loop); default ${backends.ENV} or auto")


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line on stderr (exit status 2) like every other error here."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def whole(low: int, high: int):
    """An argparse type: a whole number in [low, high], else a message that names the range."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from {low:,} to {high:,}")
        return value
    return parse


def finite(low: float, high: float = math.inf, low_open: bool = False):
    """An argparse type: a finite number in [low, high] ((low, high] when `low_open`)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and (low < value if low_open else low <= value) and value <= high):
            where = (f"{'>' if low_open else '>='} {low:g}" if high == math.inf else
                     f"in {'(' if low_open else '['}{low:g}, {high:g}]")
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number {where}")
        return value
    return parse


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="zoo", description="Train, sample and evaluate the RNN Zoo's models.")
    sub = p.add_subparsers(dest="command", required=True, metavar="{list,train,sample,eval,exercise}",
                           parser_class=Parser)

    sub.add_parser("list", help="the registered models and their sizes").set_defaults(run=cmd_list)

    t = sub.add_parser("train", help="train a model; writes a model folder and a resumable checkpoint")
    t.add_argument("model", choices=list_models(), metavar="MODEL", help="a name from `zoo list`")
    t.add_argument("--data", help="a UTF-8 text file (default: the Time Machine, from $ZOO_DATA or the cache)")
    t.add_argument("--out", required=True, help="the model folder to write (and to resume from)")
    t.add_argument("--recipe", choices=list(RECIPES), default="book",
                   help="book: SGD lr 1, batch 32 x 35, 500 epochs on 10,000 tokens; modern: AdamW, cosine, "
                        "dropout, all tokens (default: book)")
    t.add_argument("--resume", action="store_true", help="continue the run checkpointed in --out")
    t.add_argument("--overwrite", action="store_true",
                   help="replace the model or run that --out holds (without it, zoo train refuses such an --out)")
    t.add_argument("--tokens", choices=MODES, default="book",
                   help="tokenizer of a new run: book (28 chars), chars (raw), words (default: book)")
    t.add_argument("--hidden", type=whole(1, ckpt.BOUNDS["num_hiddens"]), help="hidden units (default: 256)")
    t.add_argument("--layers", type=whole(1, ckpt.BOUNDS["num_layers"]),
                   help="recurrent layers (default: 1, 2 for deep models)")
    t.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    backend_arg(t)
    recipe = t.add_argument_group("recipe settings (default: the chosen recipe's)")
    for f in fields(Recipe):
        flag = "--" + f.name.replace("_", "-")
        defaults = ", ".join(f"{name}: {getattr(r, f.name)}" for name, r in RECIPES.items())
        if f.type == "bool":
            recipe.add_argument(flag, action="store_true", default=None, help=f"{f.metadata['help']} ({defaults})")
        else:
            kind = {"int": int, "float": float, "str": str}[f.type]   # Recipe checks the values and ranges
            recipe.add_argument(flag, type=kind, metavar="X", help=f"{f.metadata['help']} ({defaults})")
    t.set_defaults(run=cmd_train)

    def source_args(q):
        q.add_argument("source", help="a model folder, or a Hugging Face Hub repo id (owner/name)")
        q.add_argument("--revision", help="Hub branch, tag or commit")
        q.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
        backend_arg(q)

    s = sub.add_parser("sample", help="continue a prefix", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    source_args(s)
    s.add_argument("--prefix", default="time traveller", help="text to continue")
    s.add_argument("--length", type=whole(0, MAX_LENGTH), default=100, help="tokens to generate")
    s.add_argument("--temperature", type=finite(0), default=0.0, help="0 = greedy (the book's predict_ch8)")
    s.add_argument("--top-k", type=whole(0, 2**63 - 1), default=0,
                   help="sample among the k likeliest tokens (0 = all)")
    s.add_argument("--top-p", type=finite(0, 1, low_open=True), default=1.0,
                   help="sample from the smallest set with this probability")
    s.add_argument("--num-samples", type=whole(1, MAX_SAMPLES), default=1, help="independent continuations")
    s.add_argument("--seed", type=whole(0, SEEDS - 1), help="makes sampling repeatable")
    s.set_defaults(run=cmd_sample)

    e = sub.add_parser("eval", help="perplexity and bits per character of a text file (of any size)")
    source_args(e)
    e.add_argument("--text-file", required=True, help="UTF-8 text to score")
    e.add_argument("--json", action="store_true", help="print JSON (a perplexity that overflows is null, with a note)")
    e.set_defaults(run=cmd_eval)

    x = sub.add_parser("exercise", help="answer one of the book's exercises by experiment (or list them)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    x.add_argument("id", help="an exercise id such as 9.1.4, `list`, or `all`")
    x.add_argument("--budget", type=finite(0, 86_400, low_open=True), default=90.0,
                   help="seconds per training run at most")
    x.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    x.add_argument("--jobs", type=whole(1, 64), help="training runs at a time (default: 2 on a CPU, 1 on a GPU)")
    x.add_argument("--data", help="a UTF-8 text file to train on instead of the Time Machine")
    x.add_argument("--mix", help="another author's text, mixed into training by the exercises that ask (9.3.4)")
    x.add_argument("--out", default="docs/exercises", help="the results folder; the page is written beside it")
    x.add_argument("--smoke", action="store_true", help="tiny models and a few batches: checks that it runs")
    x.set_defaults(run=cmd_exercise)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        args.run(args)
    except EXPECTED_ERRORS as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        sys.exit(f"zoo {args.command}: {message}")
