"""scripts/bench_scale.py runs end to end on a small text (the figures themselves are for the README, not
asserted here), and without a corpus it says so in one line."""
import json
import os
import subprocess
import sys

from conftest import ROOT

SCRIPT = ROOT / "scripts" / "bench_scale.py"


def test_every_part_runs_and_reports(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--sizes", "0.03", "--workdir", str(tmp_path),
                          "--json", str(tmp_path / "scale.json")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ") and "MB |" in line]
    assert [row.split(" | ")[0] for row in rows] == ["| eval", "| load", "| train"]
    results = json.loads((tmp_path / "scale.json").read_text())["results"]
    assert all(r["status"] == 0 and r["peak_rss_mb"] > 0 and r["characters"] > 29_000 for r in results)
    assert results[0]["tokens"] > 25_000 and results[2]["tokens_per_sec"] > 0
    assert not list(ROOT.glob("book-*MB.txt")) and (tmp_path / "book-0.03MB.txt").stat().st_size <= 30_000


def test_without_a_corpus_it_says_what_to_do(tmp_path):
    env = {**os.environ, "ZOO_DATA": str(tmp_path / "missing.txt")}
    out = subprocess.run([sys.executable, str(SCRIPT), "--sizes", "0.01"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 1 and out.stderr.strip().splitlines() == [
        f"bench_scale: ZOO_DATA={tmp_path / 'missing.txt'} does not exist; point it at a copy of timemachine.txt"]
