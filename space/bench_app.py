"""How fast the app is here: start-up (process start to the page served) and one comparison of the eight
networks, 200 characters each, through the API as a visitor gets it.

    python space/bench_app.py               # the models app.py loads ($RNN_ZOO_WEIGHTS or weights/, or pinned)
    python space/bench_app.py --untrained   # full-size untrained networks in a temporary folder

Sampling speed does not depend on the training, so --untrained measures the same work where the trained
weights are not there yet. The app runs as `python space/app.py`, so the start-up includes loading and
checking every model folder (sizes, checksum, values) as a deployment does.
"""
from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from zoo import create_model  # noqa: E402
from zoo.checkpoint import save_model  # noqa: E402
from zoo.data import Tokenizer  # noqa: E402
from zoo.models import BOOK  # noqa: E402

NETWORKS = [name for name in BOOK if name != "ngram"]


def untrained_weights(folder: Path) -> Path:
    """Every network at its registered (book) size with random weights, over the book's 28 tokens."""
    tokenizer = Tokenizer.fit("", "book")
    for name in NETWORKS:
        save_model(folder / name, name, create_model(name, vocab_size=len(tokenizer)), tokenizer)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(weights: Path | None, port: int) -> tuple[subprocess.Popen, float]:
    """`python space/app.py` on `port` (on `weights`, else its own default); the seconds until its page answers."""
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port)}
    if weights:
        env["RNN_ZOO_WEIGHTS"] = str(weights)
    started = time.perf_counter()
    app = subprocess.Popen([sys.executable, str(HERE / "app.py")], env=env, stdout=subprocess.DEVNULL)
    while True:
        if app.poll() is not None:
            raise SystemExit(f"the app exited with status {app.returncode}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).close()
            return app, time.perf_counter() - started
        except OSError:
            time.sleep(0.05)


def compare(client, seed: int) -> tuple[float, float]:
    """One comparison through the API: (seconds until the answer, seconds the panels report sampling)."""
    started = time.perf_counter()
    out = client.predict("time traveller", 200, "sample", 0.8, 0, 1.0, seed, NETWORKS, api_name="/sample")
    wall = time.perf_counter() - started
    infos = "\n".join(out[1:1 + len(BOOK)])
    return wall, sum(int(ms) for ms in re.findall(r"^(\d+) ms", infos, re.MULTILINE)) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--untrained", action="store_true", help="full-size untrained networks in a temp folder")
    parser.add_argument("--repeats", type=int, default=20, help="comparisons to time")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")       # read when gradio_client is imported
    from gradio_client import Client

    with tempfile.TemporaryDirectory() as tmp:
        weights = untrained_weights(Path(tmp)) if args.untrained else None
        port = free_port()
        app, startup = start_app(weights, port)
        try:
            client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            compare(client, 0)                                                # warm-up
            walls, inside = zip(*(compare(client, seed) for seed in range(1, args.repeats + 1)))
        finally:
            app.terminate()
            app.wait()
    print(f"weights: {f'{weights} (untrained, book sizes)' if weights else 'as app.py finds them'}")
    print(f"start-up, `python space/app.py` to the page served: {startup:.2f} s")
    print(f"one comparison, {len(NETWORKS)} networks x 200 characters, {args.repeats} runs through gradio_client: "
          f"median {statistics.median(walls):.3f} s, best {min(walls):.3f} s, worst {max(walls):.3f} s")
    print(f"  of which sampling (sum of the panels' times): median {statistics.median(inside):.3f} s")


if __name__ == "__main__":
    main()
