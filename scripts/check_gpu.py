"""Every CUDA path of the project, run and measured in one command on a GPU machine (about 6 minutes).

    python scripts/check_gpu.py --out DIR [--data timemachine.txt]

1. app: the app's model calls on the GPU, through the functions space/ calls: one comparison of the eight
   networks (200 characters each), one perplexity table, one gates call, with their times;
2. bf16: the same training steps in float32 and under bf16 autocast, and the loss after them;
3. bench: scripts/bench_speed.py --device cuda: the book's code and ours taking turns, at batch 32 and at
   1024, our training with and without the CUDA graph (DIR/bench-h200.json, DIR/bench.log);
4. ttq: seconds to validation perplexity < 4.0 for the GRUs and LSTMs with the modern recipe, its step as
   a CUDA graph (DIR/ttq-h200.json, DIR/ttq.log);
5. tests: the CUDA tests, and the model, backend, training, generation and evaluation tests with
   ZOO_TEST_DEVICE=cuda (pytest, DIR/tests.log).
Each part has a time limit, so the whole ends within about 5 minutes. It writes DIR/summary.txt and DIR/check-gpu.json, prints the summary table last, and exits 1 if anything
failed. The C++ kernels are CPU-only and are tested in CI, so they are left off here (ZOO_KERNELS=0).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TESTS = ["tests/test_cuda.py", "tests/test_models.py", "tests/test_backends.py", "tests/test_train.py",
         "tests/test_generate.py", "tests/test_evaluate.py"]
NETWORKS = ["rnn-scratch", "rnn", "gru-scratch", "gru", "lstm-scratch", "lstm", "deep-lstm-scratch", "deep-lstm"]
GATED = [name for name in NETWORKS if "rnn" not in name]   # the RNNs never reach 4.0 with this recipe (CPU runs)
PROMPT = "the time traveller"


def run(command: list[str], log: Path, timeout: float, env: dict) -> tuple[bool, str, float]:
    """Run a command with its output into `log`; (passed, its last line, seconds)."""
    started = time.perf_counter()
    with open(log, "w") as out:
        try:
            code = subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=timeout,
                                  env=env).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    return code == 0, f"exit {code}: {last[-160:]}", time.perf_counter() - started


def app_calls(weights: Path, data: Path, device: str = "cuda") -> dict:
    """The model calls of the app's three model tabs, on the GPU, timed after one warm-up call each."""
    import torch

    from zoo.checkpoint import load_model
    from zoo.data import load_corpus
    from zoo.evaluate import surprisal
    from zoo.gates import gate_activations
    from zoo.generate import generate, sampler_for
    slots = {name: load_model(weights / name, device) for name in NETWORKS}
    corpus = load_corpus(data)
    text = corpus.tokenizer.decode(corpus.splits.test[:2000])
    sync = torch.cuda.synchronize if device == "cuda" else lambda: None

    def compare():
        return {name: generate(p.model, p.tokenizer, PROMPT, 200, temperature=0.8, seed=1).texts[0]
                for name, p in slots.items()}

    def perplexity():
        return {name: float(surprisal(p.model, torch.tensor(p.tokenizer.encode(text))).mean().exp())
                for name, p in slots.items()}

    def gates():
        p = slots["deep-lstm"]
        return {k: tuple(v.shape) for k, v in gate_activations(p.model, torch.tensor(p.tokenizer.encode(text[:120]))).items()}

    out = {}
    for name, call in (("comparison", compare), ("perplexity", perplexity), ("gates", gates)):
        call()
        times = []
        for _ in range(5):
            sync()
            start = time.perf_counter()
            result = call()
            sync()
            times.append(time.perf_counter() - start)
        out[name] = {"seconds_median": sorted(times)[2], "seconds_best": min(times), "result": result}
    out["samplers"] = {name: sampler_for(p.model, 1, None) for name, p in slots.items()}
    return out


def bf16_against_fp32(data: Path, steps: int = 60, device: str = "cuda") -> dict:
    """The loss after the same modern-recipe steps (same seed, same batches) in float32 and in bf16 autocast."""
    import torch

    from zoo import create_model
    from zoo.data import load_corpus
    from zoo.recipes import recipe_for
    from zoo.train import Trainer
    corpus = load_corpus(data)
    out = {}
    for name in ("lstm", "gru-scratch", "deep-lstm-scratch"):
        losses = {}
        for bf16 in (False, True):
            recipe = recipe_for("modern", name, epochs=1, train_tokens=steps * 32 * 64 + 65, bf16=bf16, eval_every=10**6,
                                ema=0.0)
            torch.manual_seed(0)
            model = create_model(name, vocab_size=len(corpus.tokenizer), dropout=recipe.dropout,
                                 weight_drop=recipe.weight_drop)
            trainer = Trainer(model, corpus.splits, recipe, corpus.tokenizer, name, device=device)
            [log] = list(trainer.run())
            losses["bf16" if bf16 else "fp32"] = {"train_perplexity": log.train_perplexity, "steps": trainer.step,
                                                  "tokens_per_sec": log.tokens_per_sec}
        losses["relative_difference"] = (losses["bf16"]["train_perplexity"] / losses["fp32"]["train_perplexity"] - 1)
        out[name] = losses
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data", type=Path, default=Path(os.environ.get("ZOO_DATA") or ROOT.parent / "shared/data/timemachine.txt"))
    p.add_argument("--reps", type=int, default=3, help="training epochs per side that count in the benchmark")
    p.add_argument("--budget", type=float, default=10.0, help="seconds per model to reach validation perplexity 4")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "ZOO_DATA": str(args.data.resolve()), "ZOO_KERNELS": "0", "PYTHONUNBUFFERED": "1",
           "ZOO_BACKEND_CACHE": str(args.out / "backends.json")}
    os.environ.update({k: env[k] for k in ("ZOO_DATA", "ZOO_KERNELS", "ZOO_BACKEND_CACHE")})
    rows, results = [], {}

    def record(part: str, passed: bool, detail: str, seconds: float) -> None:
        rows.append((part, "ok" if passed else "FAILED", f"{seconds:.0f}s", detail))
        print(f"{part}: {'ok' if passed else 'FAILED'} in {seconds:.0f}s {detail}", flush=True)

    python = sys.executable
    for part, call in (("app calls", lambda: app_calls(ROOT / "weights", args.data)),
                       ("bf16 vs fp32", lambda: bf16_against_fp32(args.data))):
        started = time.perf_counter()
        try:
            results[part] = call()
            record(part, True, "", time.perf_counter() - started)
        except Exception as e:  # a failing part is reported, and the rest still runs
            record(part, False, f"{type(e).__name__}: {str(e)[:160]}", time.perf_counter() - started)
    bench = [python, "scripts/bench_speed.py", "--device", "cuda", "--data", str(args.data)]
    passed, last, seconds = run([*bench, "--fast", "--reps", str(args.reps), "--json",
                                 str(args.out / "bench-h200.json")], args.out / "bench.log", 150, env)
    record("bench_speed --device cuda", passed, last, seconds)
    passed, last, seconds = run([*bench, "--parts", "--ttq-graph", "--ttq-models", *GATED, "--budget",
                                 str(args.budget), "--json", str(args.out / "ttq-h200.json")], args.out / "ttq.log", 100,
                                env)
    record("time to quality", passed, last, seconds)
    workers = ["-n", "2"] if _has("xdist") else []
    limit = ["--timeout", "60"] if _has("pytest_timeout") else []       # a test that hangs fails, the rest run
    passed, last, seconds = run([python, "-m", "pytest", "-q", "--tb=short", "-rfE", "--durations=8", "-p",
                                 "no:cacheprovider", *workers, *limit, *TESTS], args.out / "tests.log", 160,
                                {**env, "ZOO_TEST_DEVICE": "cuda"})
    record("tests (ZOO_TEST_DEVICE=cuda)", passed, last, seconds)
    (args.out / "check-gpu.json").write_text(json.dumps(results, indent=1, default=str))
    summary = summarize(rows, results, args.out)
    (args.out / "summary.txt").write_text(summary)
    print(summary)
    return 0 if all(row[1] == "ok" for row in rows) else 1


def _has(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None


def summarize(rows, results: dict, out: Path) -> str:
    """One table: every part's outcome, then the figures the issue's targets name."""
    lines = ["", "part                            result  time  detail", "-" * 100]
    lines += [f"{part:31} {status:7} {secs:>5} {detail}" for part, status, secs, detail in rows]
    for name in ("bench-h200.json", "ttq-h200.json"):
        path = out / name
        if not path.is_file():
            continue
        data = json.loads(path.read_text())
        for part in ("train", "large_batch"):
            for model, r in data.get(part, {}).items():
                graph = f"  graph {r['graph'] / 1e3:8.1f}k ({r['ratio_graph']:.1f}x)" if "graph" in r else ""
                lines.append(f"{part:11} {model:18} book {r['book'] / 1e3:8.1f}k  ours {r['ours'] / 1e3:8.1f}k "
                             f"({r['ratio']:.1f}x){graph}  [{r['backend']}]")
        for model, r in data.get("generate", {}).items():
            lines.append(f"generate    {model:18} book {r['book'] / 1e3:8.1f}k  ours {r['ours'] / 1e3:8.1f}k "
                         f"({r['ratio']:.1f}x)  [{r['sampler']}]")
        for model, r in data.get("evaluate", {}).items():
            lines.append(f"evaluate    {model:18} book batched {r['book_batched'] / 1e3:8.1f}k  ours {r['ours'] / 1e3:8.1f}k"
                         f" ({r['ratio_batched']:.1f}x)  ppl {r['ours_perplexity']:.4f} vs 1 stream "
                         f"{r['one_stream_perplexity']:.4f}")
        for model, r in data.get("time_to_quality", {}).items():
            reached = f"{r['seconds']:.1f}s" if r["seconds"] is not None else f"not reached ({r['stop']})"
            lines.append(f"ttq         {model:18} {reached:>24}  best {r['best_valid_perplexity']:.3f} in "
                         f"{r['epochs']} epochs, {r['tokens_per_sec'] / 1e3:.1f}k tok/s")
    app = results.get("app calls", {})
    for call in ("comparison", "perplexity", "gates"):
        if call in app:
            lines.append(f"app         {call:18} median {app[call]['seconds_median']:.3f}s  best "
                         f"{app[call]['seconds_best']:.3f}s")
    if app.get("samplers"):
        lines.append(f"app         samplers           {app['samplers']}")
    for model, r in results.get("bf16 vs fp32", {}).items():
        lines.append(f"bf16        {model:18} train ppl fp32 {r['fp32']['train_perplexity']:.3f}  bf16 "
                     f"{r['bf16']['train_perplexity']:.3f} ({r['relative_difference']:+.2%}) after {r['fp32']['steps']}"
                     f" steps; tok/s {r['fp32']['tokens_per_sec'] / 1e3:.0f}k / {r['bf16']['tokens_per_sec'] / 1e3:.0f}k")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
