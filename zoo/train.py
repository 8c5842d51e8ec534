"""The one trainer every model shares: batches, truncated BPTT, clipping, validation, checkpoints, resume.

`Trainer.run()` is a generator: it trains and yields a `TrainLog` after every epoch (and every
`recipe.log_every` batches), so the CLI prints progress, the app streams a live plot, and a consumer
stops training by stopping iteration. Checkpoints are written at epoch boundaries, at most every
`recipe.checkpoint_every` seconds, so an interrupted run loses at most that much and `Trainer.resume`
continues it to the same weights an uninterrupted run reaches (on CPU, same seed). A checkpoint is one
safetensors file with the JSON state (epoch, recipe, history, ...) in its header, replaced by one atomic
rename: a kill at any instant leaves tensors and counters from the same epoch.

Under `torchrun` (a process group is initialised) each rank trains on its rows of every batch through
DistributedDataParallel, which averages the gradients, so W ranks with batch B compute what one process
with batch B computes; rank 0 alone writes checkpoints.
"""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterator

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.func import functional_call
from torch.nn.parallel import DistributedDataParallel

from zoo import checkpoint as ckpt
from zoo.data import BATCHINGS, Splits, Tokenizer, max_batches, num_batches
from zoo.evaluate import score
from zoo.graphs import GraphedStep
from zoo.models import model_from_config
from zoo.recipes import Recipe

STATE_FILE = "checkpoint.safetensors"


def read_state(run_dir: str | Path) -> dict:
    """The JSON part of `run_dir`'s checkpoint (name, tokenizer, recipe, epoch, history, ...)."""
    path = Path(run_dir) / STATE_FILE
    try:
        return json.loads(ckpt.load_metadata(path)["state"])
    except (KeyError, json.JSONDecodeError):
        raise ckpt.CheckpointError(f"{path} holds no training state (not a checkpoint written by zoo)") from None


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss, a run that cannot be resumed); the message says where."""


@dataclass
class TrainLog:
    """One line of the training history."""
    epoch: float                   # epochs completed; fractional in the logs written every `log_every` batches
    step: int                      # optimizer steps so far
    train_perplexity: float        # running perplexity over the epoch so far, as the book reports it
    valid_perplexity: float | None
    tokens_per_sec: float          # training throughput over the epoch so far (validation excluded)
    elapsed: float                 # wall-clock seconds since the run started, validation included
    lr: float
    end_of_epoch: bool = True

    def __str__(self) -> str:
        valid = f" valid ppl {self.valid_perplexity:7.3f}" if self.valid_perplexity else ""
        return (f"epoch {self.epoch:7.2f} step {self.step:6d} train ppl {self.train_perplexity:7.3f}{valid}"
                f" {self.tokens_per_sec:9.0f} tok/s {self.elapsed:8.1f}s lr {self.lr:.3g}")


def lm_loss(logits: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits (B, T, V) against targets (B, T)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), Y.reshape(-1))


def detach(state):
    """Cut the graph between batches (sequential partitioning carries the values, not the history)."""
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


class Trainer:
    """Trains `model` on `splits` with `recipe`; checkpoints into `run_dir` when one is given."""

    def __init__(self, model: torch.nn.Module, splits: Splits, recipe: Recipe, tokenizer: Tokenizer,
                 name: str = "model", run_dir: str | Path | None = None, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model, self.splits, self.recipe, self.tokenizer, self.name = model.to(self.device), splits, recipe, tokenizer, name
        self.run_dir = Path(run_dir) if run_dir else None
        self.train_ids = splits.train[:recipe.train_tokens] if recipe.train_tokens else splits.train
        if num_batches(len(self.train_ids), recipe.batch_size, recipe.num_steps) < 1:
            raise TrainingError(f"{len(self.train_ids)} training tokens do not fill one batch of "
                                f"{recipe.batch_size} x {recipe.num_steps}; use a longer text or smaller batches")
        self.rank, self.world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        if recipe.batch_size % self.world:
            raise TrainingError(f"batch size {recipe.batch_size} does not split over {self.world} processes")
        if recipe.bptt_batches > 1 and (self.world > 1 or recipe.batching != "sequential"):
            raise TrainingError("bptt_batches > 1 needs sequential batching in one process")
        self.rows = slice(self.rank * recipe.batch_size // self.world, (self.rank + 1) * recipe.batch_size // self.world)
        if self.run_dir and self.rank == 0:   # what a kill during a checkpoint write left behind
            ckpt.remove_temporaries(self.run_dir)
        # what training calls: the model itself, or its DDP wrapper that all-reduces the gradients
        self.net = (DistributedDataParallel(self.model, device_ids=[self.device] if self.device.type == "cuda" else None)
                    if self.world > 1 else self.model)
        params = [p for p in self.model.parameters() if p.requires_grad]
        # A CUDA graph replays the optimizer step as recorded: AdamW then reads its learning rate from a tensor
        # (set before each replay) and keeps its step counts on the GPU (capturable); SGD's update reads a
        # tensor learning rate on the host, so SGD is recorded only with its constant learning rate baked in.
        graphed = recipe.cuda_graph and GraphedStep.possible(self.device, self.world) and recipe.bptt_batches == 1
        if recipe.optimizer == "sgd":
            graphed = graphed and recipe.schedule == "constant" and not recipe.warmup_steps
            self.optimizer = torch.optim.SGD(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
        else:
            lr = torch.tensor(recipe.lr, device=self.device) if graphed else recipe.lr
            self.optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=recipe.weight_decay, capturable=graphed)
        self.run_step = GraphedStep(self) if graphed and GraphedStep.supports(self.optimizer) else self.train_step
        # the moving average of the weights, updated in place after every step (so a CUDA graph can hold it)
        self.averaged = copy.deepcopy(self.model).requires_grad_(False) if recipe.ema else None
        self.averaged_steps = 0
        self.batches = torch.Generator().manual_seed(recipe.seed)   # batch order and offsets
        torch.manual_seed(recipe.seed)                                # dropout masks
        self.total_steps = recipe.epochs * num_batches(len(self.train_ids), recipe.batch_size, recipe.num_steps)
        self.epoch = self.step = self.bad_evals = 0
        self.elapsed = 0.0
        self.history: list[dict] = []
        self.best_valid, self.best_epoch, self.best_state = math.inf, 0, None

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights that are validated and kept: the moving average when the recipe keeps one."""
        return self.averaged if self.averaged is not None else self.model

    # ------------------------------------------------------------------------ training

    def train_step(self, X: torch.Tensor, Y: torch.Tensor, state, zero_grad: bool = True):
        """One optimizer step on a (B, T) batch; returns the (unsynchronised) loss and the new state."""
        bf16 = self.recipe.bf16 and self.device.type == "cuda"
        with torch.autocast(self.device.type, torch.bfloat16, enabled=bf16, cache_enabled=False):
            if self.recipe.bptt_batches > 1:   # later batches backpropagate through this one: keep the weights it used
                weights = {name: p.clone() for name, p in self.model.named_parameters()}
                logits, state = functional_call(self.model, weights, (X, state))
            else:
                logits, state = self.net(X, state)
            loss = lm_loss(logits, Y)
        if zero_grad:   # a CUDA graph capture zeroes before recording instead (zoo/graphs.py)
            self.optimizer.zero_grad(set_to_none=True)
        loss.backward(retain_graph=self.recipe.bptt_batches > 1)   # the next batches backpropagate through it too
        if self.recipe.clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.recipe.clip, foreach=True)
        self.optimizer.step()
        if self.averaged is not None:
            self._update_average()
        return loss.detach(), state

    @torch.no_grad()
    def _update_average(self) -> None:
        """EMA: the first step's weights, then average <- average + (1 - ema) (weights - average)."""
        for average, weights in zip(self.averaged.parameters(), self.model.parameters()):
            if self.averaged_steps == 0:
                average.copy_(weights)
            else:
                average.lerp_(weights, 1 - self.recipe.ema)
        self.averaged_steps += 1

    def run(self) -> Iterator[TrainLog]:
        """Train until the recipe's epochs, patience or time budget run out, yielding progress."""
        r = self.recipe
        started = time.perf_counter() - self.elapsed
        last_checkpoint = time.perf_counter()
        batching = BATCHINGS[r.batching]
        per_epoch = num_batches(len(self.train_ids), r.batch_size, r.num_steps)
        most = max_batches(len(self.train_ids), r.batch_size, r.num_steps)
        while self.epoch < r.epochs and not self.stopped_early:
            self.model.train()
            # each batch's loss copied into one buffer: a list of small tensors kept across the epoch's big
            # transient ones fragments the heap (about 75 bytes of RSS per training token, measured)
            losses, done = torch.empty(most, device=self.device), 0
            state, tokens, t0 = None, 0, time.perf_counter()
            out_of_time = False
            for i, (X, Y) in enumerate(batching(self.train_ids, r.batch_size, r.num_steps, self.batches)):
                lr = r.lr_at(self.step, self.total_steps)
                for group in self.optimizer.param_groups:
                    if torch.is_tensor(group["lr"]):
                        group["lr"].fill_(lr)
                    else:
                        group["lr"] = lr
                # the corpus is compact ids (uint8 for 28 tokens); the model and the loss index with int64
                X = X[self.rows].to(self.device, non_blocking=True).long()
                Y = Y[self.rows].to(self.device, non_blocking=True).long()
                if state is None or r.batching != "sequential":
                    state = None
                elif i % r.bptt_batches == 0:   # cut the graph (every batch by default, as the book does)
                    state = detach(state)
                loss, state = self.run_step(X, Y, state)
                losses[done] = loss
                done += 1
                tokens += Y.numel() * self.world
                self.step += 1
                out_of_time = bool(r.time_budget) and time.perf_counter() - started >= r.time_budget
                if r.log_every and (i + 1) % r.log_every == 0 and i + 1 < per_epoch and not out_of_time:
                    self._sync()
                    self.elapsed = time.perf_counter() - started
                    yield self._log(losses[:done], tokens, time.perf_counter() - t0, None, lr,
                                    epoch=self.epoch + min(1.0, (i + 1) / per_epoch))
                if out_of_time:
                    break
            self._sync()
            train_seconds = time.perf_counter() - t0
            self._check_finite(losses[:done])
            self.epoch += 1
            valid = None
            if self.epoch % r.eval_every == 0 or self.epoch == r.epochs or out_of_time:
                valid = self._validate()
            self.elapsed = time.perf_counter() - started
            log = self._log(losses[:done], tokens, train_seconds, valid, lr)
            self.history.append(asdict(log))
            if self.run_dir and self.rank == 0 and (time.perf_counter() - last_checkpoint >= r.checkpoint_every
                                 or self.epoch == r.epochs or self.stopped_early or out_of_time):
                self.save_checkpoint()
                last_checkpoint = time.perf_counter()
            yield log
            if out_of_time:
                break

    def _sync(self) -> None:
        """Wait for the GPU's queued work, so that clocks read around it time the work, not its launch."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @property
    def stopped_early(self) -> bool:
        return bool(self.recipe.patience) and self.bad_evals >= self.recipe.patience

    def _log(self, losses, tokens, seconds, valid, lr, epoch: float | None = None) -> TrainLog:
        mean_loss = losses.mean()
        if self.world > 1:   # every rank saw different rows: report the mean over all of them
            dist.all_reduce(mean_loss)
            mean_loss /= self.world
        mean_loss = float(mean_loss)
        return TrainLog(self.epoch if epoch is None else epoch, self.step, math.exp(min(mean_loss, 700)), valid,
                        tokens / max(seconds, 1e-9), self.elapsed, lr, end_of_epoch=epoch is None)

    def _check_finite(self, losses) -> None:
        finite = torch.isfinite(losses)
        if not bool(finite.all()):
            bad = int((~finite).nonzero()[0])
            step = self.step - len(losses) + bad + 1
            raise TrainingError(f"the loss became {float(losses[bad])} at step {step} (epoch {self.epoch + 1}, "
                                f"batch {bad + 1}); lower the learning rate or turn clipping on")

    def _validate(self) -> float:
        valid = score(self.eval_model, self.splits.valid).perplexity
        if not math.isfinite(valid):
            raise TrainingError(f"the validation perplexity overflowed at epoch {self.epoch}; lower the learning "
                                f"rate or turn clipping on")
        if valid < self.best_valid:
            self.best_valid, self.best_epoch, self.bad_evals = valid, self.epoch, 0
            self.best_state = {k: v.detach().clone() for k, v in self.eval_model.state_dict().items()}
        else:
            self.bad_evals += 1
        return valid

    # ------------------------------------------------------------------------ results

    def finish(self) -> dict:
        """Load the best-validation weights into the model and score all three splits with them."""
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        scores = {split: score(self.model, ids) for split, ids in
                  (("train", self.train_ids), ("valid", self.splits.valid), ("test", self.splits.test))}
        logs = self.history
        return {
            **{f"{split}_perplexity": s.perplexity for split, s in scores.items()},
            "test_bits_per_token": scores["test"].bits_per_token,
            "test_tokens": scores["test"].tokens,
            "best_epoch": self.best_epoch,
            "epochs": self.epoch,
            "steps": self.step,
            "train_seconds": self.elapsed,
            "tokens_per_sec": sorted(l["tokens_per_sec"] for l in logs)[len(logs) // 2] if logs else 0.0,
            "last_train_perplexity": logs[-1]["train_perplexity"] if logs else None,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "device": str(self.device),
        }

    # ------------------------------------------------------------------------ checkpoints

    def save_checkpoint(self) -> None:
        """Everything `resume` needs in one safetensors file (the JSON state in its header), replaced atomically."""
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        opt = self.optimizer.state_dict()
        scalars = {}
        for index, entries in opt["state"].items():
            for key, value in entries.items():
                if torch.is_tensor(value):
                    tensors[f"optim.{index}.{key}"] = value
                else:
                    scalars[f"{index}.{key}"] = value
        if self.averaged is not None:
            tensors.update({f"averaged.{k}": v for k, v in self.averaged.state_dict().items()})
        if self.best_state is not None:
            tensors.update({f"best.{k}": v for k, v in self.best_state.items()})
        tensors["rng.batches"] = self.batches.get_state()
        tensors["rng.torch"] = torch.get_rng_state()
        if self.device.type == "cuda":        # dropout masks on a GPU come from its own generator
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        state = {
            "name": self.name, "model": self.model.config.to_dict(), "tokenizer": self.tokenizer.to_dict(),
            "recipe": self.recipe.to_dict(), "epoch": self.epoch, "step": self.step,
            "bad_evals": self.bad_evals, "elapsed": self.elapsed,
            "best_valid": self.best_valid if math.isfinite(self.best_valid) else None,
            "best_epoch": self.best_epoch, "history": self.history, "averaged_steps": self.averaged_steps,
            "optimizer": {"param_groups": [{**g, "lr": float(g["lr"])} for g in opt["param_groups"]],
                          "scalars": scalars}}
        ckpt.save_tensors(self.run_dir / STATE_FILE, tensors, metadata={"state": json.dumps(state)})

    @classmethod
    def resume(cls, run_dir: str | Path, splits: Splits, device="cpu", **recipe_overrides) -> "Trainer":
        """Rebuild a trainer from `run_dir`'s checkpoint; `recipe_overrides` may extend e.g. epochs."""
        run_dir = Path(run_dir)
        meta = read_state(run_dir)
        ckpt.check_config(meta["model"], run_dir / STATE_FILE)
        tensors = ckpt.load_tensors(run_dir / STATE_FILE)
        model = model_from_config(meta["model"])
        recipe = replace(Recipe.from_dict(meta["recipe"]), **recipe_overrides)
        trainer = cls(model, splits, recipe, Tokenizer.from_dict(meta["tokenizer"]), meta["name"], run_dir, device)
        part = lambda prefix: {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        ckpt.load_state_strict(trainer.model, part("model."), run_dir / STATE_FILE)
        opt = {"state": {}, "param_groups": meta["optimizer"]["param_groups"]}
        for key, value in [*part("optim.").items(), *meta["optimizer"]["scalars"].items()]:
            index, name = key.split(".", 1)
            opt["state"].setdefault(int(index), {})[name] = value
        lrs = [group["lr"] for group in trainer.optimizer.param_groups]
        trainer.optimizer.load_state_dict(opt)
        for group, lr in zip(trainer.optimizer.param_groups, lrs):
            if torch.is_tensor(lr):           # a graphed step reads its learning rate from this very tensor
                group["lr"] = lr.fill_(group["lr"])
        if trainer.averaged is not None:
            ckpt.load_state_strict(trainer.averaged, part("averaged."), run_dir / STATE_FILE)
        best = part("best.")
        trainer.best_state = best or None
        trainer.batches.set_state(tensors["rng.batches"])
        torch.set_rng_state(tensors["rng.torch"])
        if trainer.device.type == "cuda" and "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda"], trainer.device)
        for key in ("epoch", "step", "bad_evals", "elapsed", "best_epoch", "history", "averaged_steps"):
            setattr(trainer, key, meta[key])
        trainer.best_valid = math.inf if meta["best_valid"] is None else meta["best_valid"]
        return trainer
