"""The command line: `python -m zoo list | train | sample | eval` (also installed as `zoo`).

Every failure the user can fix (a wrong path, a corrupt file, a bad option) ends as one line on stderr
and a non-zero exit status, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import fields
from pathlib import Path

import torch
import torch.distributed as dist

from zoo import checkpoint as ckpt
from zoo.data import DataError, Tokenizer, load_corpus, read_text
from zoo.evaluate import score
from zoo.fit import fit, fit_ngram_run
from zoo.generate import generate
from zoo.hub import load
from zoo.models import create_model, describe, list_models
from zoo.recipes import RECIPES, Recipe, recipe_for
from zoo.tokenizer import MODES
from zoo.train import STATE_FILE, Trainer, TrainingError, read_state

EXPECTED_ERRORS = (DataError, ckpt.CheckpointError, TrainingError, ValueError, KeyError, OSError)


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
    else:
        if (out / STATE_FILE).exists():
            raise TrainingError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
        corpus = load_corpus(args.data, args.tokens)
        recipe = recipe_for(args.recipe, args.model, **overrides)
        torch.manual_seed(recipe.seed)
        sizes = {k: v for k, v in (("num_hiddens", args.hidden), ("num_layers", args.layers)) if v is not None}
        model = create_model(args.model, vocab_size=len(corpus.tokenizer), dropout=recipe.dropout,
                             weight_drop=recipe.weight_drop, **sizes)
        trainer = Trainer(model, corpus.splits, recipe, corpus.tokenizer, args.model, out, device)
    try:
        metrics = fit(trainer, out, data=corpus.source)
    except KeyboardInterrupt:
        raise SystemExit(f"interrupted at epoch {trainer.epoch}; `--resume` continues from the last checkpoint in {out}")
    if trainer.rank:
        return
    print(f"{args.model}: train ppl {metrics['train_perplexity']:.3f}  valid ppl {metrics['valid_perplexity']:.3f}"
          f"  test ppl {metrics['test_perplexity']:.3f}  {metrics['tokens_per_sec']:,.0f} tok/s  -> {out}")


def cmd_sample(args) -> None:
    pretrained = load(args.source, args.revision, pick_device(args.device))
    result = generate(pretrained.model, pretrained.tokenizer, args.prefix, args.length, args.temperature,
                      args.top_k, args.top_p, args.num_samples, args.seed)
    if result.unknown:
        print(f"note: {''.join(result.unknown)!r} not in the vocabulary, read as <unk>", file=sys.stderr)
    for text in result.texts:
        print(text)


def cmd_eval(args) -> None:
    pretrained = load(args.source, args.revision, pick_device(args.device))
    text = read_text(args.text_file)
    tokenizer = pretrained.tokenizer
    ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    result = {"model": pretrained.name, "source": pretrained.source, **score(pretrained.model, ids).to_dict(),
              "unknown": tokenizer.unknown(text)}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        unit = "word" if tokenizer.mode == "words" else "char"
        print(f"{pretrained.name}: perplexity {result['perplexity']:.3f}  bits/{unit} "
              f"{result['bits_per_token']:.3f}  tokens {result['tokens']}"
              + (f"  unknown {''.join(result['unknown'])!r}" if result["unknown"] else ""))


# ---------------------------------------------------------------------------- arguments

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="zoo", description="Train, sample and evaluate the RNN Zoo's models.")
    sub = p.add_subparsers(dest="command", required=True, metavar="{list,train,sample,eval}")

    sub.add_parser("list", help="the registered models and their sizes").set_defaults(run=cmd_list)

    t = sub.add_parser("train", help="train a model; writes a model folder and a resumable checkpoint")
    t.add_argument("model", choices=list_models(), metavar="MODEL", help="a name from `zoo list`")
    t.add_argument("--data", help="a UTF-8 text file (default: the Time Machine, from $ZOO_DATA or the cache)")
    t.add_argument("--out", required=True, help="the model folder to write (and to resume from)")
    t.add_argument("--recipe", choices=list(RECIPES), default="book",
                   help="book: SGD lr 1, batch 32 x 35, 500 epochs on 10,000 tokens; modern: AdamW, cosine, "
                        "dropout, all tokens (default: book)")
    t.add_argument("--resume", action="store_true", help="continue the run checkpointed in --out")
    t.add_argument("--tokens", choices=MODES, default="book",
                   help="tokenizer of a new run: book (28 chars), chars (raw), words (default: book)")
    t.add_argument("--hidden", type=int, help="hidden units (default: 256)")
    t.add_argument("--layers", type=int, help="recurrent layers (default: 1, 2 for deep models)")
    t.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    recipe = t.add_argument_group("recipe settings (default: the chosen recipe's)")
    for f in fields(Recipe):
        flag = "--" + f.name.replace("_", "-")
        defaults = ", ".join(f"{name}: {getattr(r, f.name)}" for name, r in RECIPES.items())
        if f.type == "bool":
            recipe.add_argument(flag, action="store_true", default=None, help=f"{f.metadata['help']} ({defaults})")
        else:
            kind = {"int": int, "float": float, "str": str}[f.type]
            recipe.add_argument(flag, type=kind, metavar="X", help=f"{f.metadata['help']} ({defaults})")
    t.set_defaults(run=cmd_train)

    def source_args(q):
        q.add_argument("source", help="a model folder, or a Hugging Face Hub repo id (owner/name)")
        q.add_argument("--revision", help="Hub branch, tag or commit")
        q.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")

    s = sub.add_parser("sample", help="continue a prefix", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    source_args(s)
    s.add_argument("--prefix", default="time traveller", help="text to continue")
    s.add_argument("--length", type=int, default=100, help="tokens to generate")
    s.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (the book's predict_ch8)")
    s.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest tokens (0 = all)")
    s.add_argument("--top-p", type=float, default=1.0, help="sample from the smallest set with this probability")
    s.add_argument("--num-samples", type=int, default=1, help="independent continuations")
    s.add_argument("--seed", type=int, help="makes sampling repeatable")
    s.set_defaults(run=cmd_sample)

    e = sub.add_parser("eval", help="perplexity and bits per character of a text file")
    source_args(e)
    e.add_argument("--text-file", required=True, help="UTF-8 text to score")
    e.add_argument("--json", action="store_true", help="print JSON")
    e.set_defaults(run=cmd_eval)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        args.run(args)
    except EXPECTED_ERRORS as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        sys.exit(f"zoo {args.command}: {message}")
