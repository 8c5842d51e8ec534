"""What the Train tab gives a visitor here: how many page updates a second a run streams, and what a run at
the page's default settings (gru, 256 hidden units, the book's SGD recipe on its first 10,000 characters,
the full time limit) reaches.

    python space/bench_train_tab.py                     # the defaults, the app's time limit (60 s on CPU)
    python space/bench_train_tab.py --model lstm --seconds 20

The app is started as `python space/app.py` and driven through gradio_client, as a visitor's page is.
Training needs the corpus: offline, point ZOO_DATA at timemachine.txt.
"""
from __future__ import annotations

import argparse
import os
import time

from bench_app import free_port, start_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gru", help="architecture (default: the page's, gru)")
    parser.add_argument("--seconds", type=int, help="time limit of the run (default: the page's, the app's limit)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")       # read when gradio_client is imported
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    port = free_port()
    app, _ = start_app(None, port)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        chosen = {"name": args.model, **({"seconds": args.seconds} if args.seconds else {})}
        job = client.submit(**chosen, api_name="/train")             # everything else as the page has it
        started, stamps = time.perf_counter(), []
        for out in job:
            if "· epoch" in str(out[0]):
                stamps.append(time.perf_counter() - started)
        status = job.result()[0]
    except AppError as e:
        raise SystemExit(f"the Train tab refused: {e}") from None
    finally:
        app.terminate()
        app.wait()
    span = stamps[-1] - stamps[0] if len(stamps) > 1 else float("nan")
    print(f"{args.model} at the page's defaults{f', {args.seconds} s' if args.seconds else ''}: {len(stamps)} updates, "
          f"{(len(stamps) - 1) / span:.1f} a second between the first and the last")
    print(status.replace("**", ""))


if __name__ == "__main__":
    main()
