"""Many visitors at once: N = 50 gradio_client clients ask for a comparison of the eight networks (the page's
default choice) at the same moment.
Every one gets its answer (the queue holds them; none gets an error); the median and worst latencies are
printed and written to artifacts/load_test.json."""
import json
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gradio_client import Client

from zoo.models import BOOK

N = 50
LENGTH = 200
REPORT = Path(__file__).resolve().parents[1] / "artifacts" / "load_test.json"


def test_fifty_visitors_at_once_all_get_answers(app, capsys):
    loaded = [name for name, slot in app.module.slots.items() if slot.ok and name != "ngram"]
    with ThreadPoolExecutor(N) as pool:
        clients = list(pool.map(lambda _: Client(app.url, verbose=False), range(N)))
    start = threading.Barrier(N)

    def visit(i):
        start.wait()
        t = time.perf_counter()
        try:
            out = clients[i].predict("time traveller", LENGTH, "sample", 0.8, 0, 1.0, i, loaded, api_name="/sample")
        except Exception as e:   # the test is that there are none: collect them all to show which and why
            return time.perf_counter() - t, f"{type(e).__name__}: {e}"
        texts = dict(zip(BOOK, out[1 + len(BOOK):]))
        lengths = {n: len("".join(p["token"] for p in texts[n]).replace("<unk>", "?")) for n in loaded}
        ok = all(v == len("time traveller") + LENGTH for v in lengths.values())
        return time.perf_counter() - t, None if ok else f"short answers: {lengths}"

    with ThreadPoolExecutor(N) as pool:
        results = list(pool.map(visit, range(N)))
    latencies = sorted(seconds for seconds, _ in results)
    errors = [error for _, error in results if error]
    figures = {"clients": N, "models": len(loaded), "length": LENGTH, "median_s": statistics.median(latencies),
               "worst_s": latencies[-1], "errors": len(errors)}
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(figures, indent=2) + "\n")
    with capsys.disabled():
        print(f"\nload test: {N} clients x {len(loaded)} models x {LENGTH} chars: median "
              f"{figures['median_s']:.2f} s, worst {figures['worst_s']:.2f} s, {len(errors)} errors")
    assert not errors, errors[:3]
