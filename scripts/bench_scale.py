"""How cost grows with the text: time and peak memory of `zoo eval`, of loading a training corpus, and of one
training epoch of gru, on texts of 1, 10 and 100 MB made by repeating the book.

    python scripts/bench_scale.py                               # every part at 1, 10 and 100 MB
    python scripts/bench_scale.py --sizes 1,10 --parts eval,load
    python scripts/bench_scale.py --json docs/bench/scale.json --timeout 3600

Each measurement is a fresh process (`python -m zoo ...`, or a one-line loader) and its peak RSS is `os.wait4`'s
ru_maxrss. Linux starts a child's high-water mark at its parent's RSS, so this script imports neither torch nor
zoo: its own ~15 MB stay below every figure. The texts are written once into --workdir
(default: a temporary folder) and never into the repository. Targets (issue 13): eval of 100 MB under 1 GB
peak RSS and at least 100k characters/s on a 2-core CPU; loading a 100 MB training corpus under 2 GB; time
linear in size. Other work on the machine slows the figures: the load average is printed with them.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("eval", "load", "train")
LOAD = "import sys; from zoo.data import load_corpus; c = load_corpus(sys.argv[1]); print(len(c.splits.train))"
# The book's path as zoo finds it ($ZOO_DATA, the cache, or a download), or zoo's one-line reason on stderr.
BOOK = ("import sys; from zoo.data import DataError, timemachine_path\n"
        "try: print(timemachine_path())\nexcept DataError as e: sys.exit(str(e))")


def processor() -> str:
    """The CPU's model name as lscpu gives it (the figures depend on it)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration, subprocess.TimeoutExpired):
        return platform.processor() or "unknown"


def book(source: Path | None) -> Path:
    """`source`, or the book where zoo finds it; SystemExit with zoo's reason when there is none."""
    if source:
        return source
    found = subprocess.run([sys.executable, "-c", BOOK], capture_output=True, text=True, cwd=ROOT,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    if found.returncode:
        sys.exit(f"bench_scale: {found.stderr.strip()}")
    return Path(found.stdout.strip())


def characters(path: Path) -> int:
    with open(path, encoding="utf-8") as f:
        return sum(len(chunk) for chunk in iter(lambda: f.read(1 << 20), ""))


def make_text(workdir: Path, megabytes: float, source: Path) -> Path:
    """`source` repeated to `megabytes` MB (10^6 bytes), cut at a line end; written once."""
    path = workdir / f"book-{megabytes:g}MB.txt"
    if not path.is_file():
        book = source.read_text(encoding="utf-8")
        target = int(megabytes * 1e6)
        text = book * (target // len(book) + 1)
        path.write_text(text[:text.rfind("\n", 0, target) + 1], encoding="utf-8")
    return path


def measure(command: list[str], timeout: float | None) -> dict:
    """Run `command`; its wall time, peak RSS (MB), exit status and output."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(command, stdout=out, stderr=err, text=True, cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        deadline = None if timeout is None else started + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if deadline and time.perf_counter() > deadline:
                proc.kill()
                _, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        return {"seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024, "status": os.waitstatus_to_exitcode(status),
                "timed_out": bool(deadline and seconds > timeout), "stdout": out.read(), "stderr": err.read()[-2000:]}


def run_part(part: str, text: Path, args, workdir: Path) -> dict:
    python = sys.executable
    if part == "eval":
        r = measure([python, "-m", "zoo", "eval", str(args.model), "--text-file", str(text), "--json",
                     "--device", "cpu"], args.timeout)
        if r["status"] == 0:
            r["tokens"] = json.loads(r["stdout"])["tokens"]
    elif part == "load":
        r = measure([python, "-c", LOAD, str(text)], args.timeout)
    else:
        out = workdir / f"train-{text.stem}"
        r = measure([python, "-m", "zoo", "train", "gru", "--data", str(text), "--out", str(out), "--overwrite",
                     "--recipe", "modern", "--epochs", "1", "--device", "cpu"], args.timeout)
        if r["status"] == 0:
            metrics = json.loads((out / "config.json").read_text())["metrics"]
            r.update(train_seconds=metrics["train_seconds"], tokens_per_sec=metrics["tokens_per_sec"])
    return r


def row(part: str, megabytes: float, characters: int, r: dict) -> str:
    if r["timed_out"] or r["status"] != 0:
        why = "timed out" if r["timed_out"] else (r["stderr"].strip().splitlines() or ["failed"])[-1][:80]
        return f"| {part} | {megabytes:g} MB | {r['seconds']:,.0f} | {r['peak_rss_mb']:,.0f} | | {why} |"
    rate = f"{characters / r['seconds']:,.0f}"
    note = {"eval": f"{r.get('tokens', 0):,} tokens scored",
            "load": "fit the vocabulary, encode, split",
            "train": f"of which training and validation {r.get('train_seconds', 0):,.0f} s, "
                     f"{r.get('tokens_per_sec', 0):,.0f} tokens/s"}[part]
    return f"| {part} | {megabytes:g} MB | {r['seconds']:,.1f} | {r['peak_rss_mb']:,.0f} | {rate} | {note} |"


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1,10,100", help="text sizes in MB, comma-separated (default: 1,10,100)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"which of {', '.join(PARTS)} (default: all)")
    p.add_argument("--data", type=Path, help="the text to repeat (default: the book, from $ZOO_DATA or the cache)")
    p.add_argument("--model", type=Path, default=ROOT / "weights" / "gru", help="the model eval scores with")
    p.add_argument("--workdir", type=Path, help="where the texts are written (default: a temporary folder)")
    p.add_argument("--timeout", type=float, help="seconds after which a measurement is stopped")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    sizes = [float(s) for s in args.sizes.split(",")]
    parts = [part for part in args.parts.split(",") if part]
    if set(parts) - set(PARTS):
        p.error(f"--parts: choose among {', '.join(PARTS)}")
    source, cpu = book(args.data), processor()
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        texts = {megabytes: make_text(workdir, megabytes, source) for megabytes in sizes}
        print(f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}; "
              f"load average {os.getloadavg()[0]:.1f} at the start", flush=True)
        print("| part | text | time (s) | peak RSS (MB) | characters/s | |\n|---|---|---|---|---|---|", flush=True)
        results = []
        for megabytes, text in texts.items():
            count = characters(text)
            for part in parts:
                r = run_part(part, text, args, workdir)
                print(row(part, megabytes, count, r), flush=True)
                results.append({"part": part, "megabytes": megabytes, "characters": count,
                                **{k: v for k, v in r.items() if k not in ("stdout", "stderr")}})
        print(f"load average {os.getloadavg()[0]:.1f} at the end")
    if args.json:
        args.json.write_text(json.dumps({"processor": cpu, "cores": os.cpu_count(), "results": results},
                                         indent=1))
    return results


if __name__ == "__main__":
    main()
