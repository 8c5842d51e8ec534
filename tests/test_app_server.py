"""What the server keeps on disk: no uploads (no component takes a file), and the Train tab's run folders gone
when the server is stopped by SIGTERM or SIGINT, as `python space/app.py` runs on a host."""
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import httpx
import pytest
from app_fixtures import SPACE, free_port
from gradio.utils import get_upload_folder
from gradio_client import Client


def test_uploads_are_refused_and_nothing_is_stored(app):
    name = f"probe-{uuid.uuid4().hex}.bin"
    for size in (1, 2_000_000):
        response = httpx.post(f"{app.url}gradio_api/upload", files={"files": (name, b"x" * size)}, timeout=30)
        assert response.status_code == 413 and "maximum allowed size of 0 bytes" in response.text
    assert not list(Path(get_upload_folder()).rglob(name))


@pytest.fixture
def served(app_weights, tmp_path):
    """`python space/app.py` in its own process, its Gradio cache (and so its run folders) in tmp_path."""
    port, cache = free_port(), tmp_path / "gradio"
    env = {**os.environ, "RNN_ZOO_WEIGHTS": str(app_weights), "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_SERVER_PORT": str(port), "GRADIO_TEMP_DIR": str(cache), "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, str(SPACE / "app.py")], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, proc.stderr.read()
        try:
            urllib.request.urlopen(url, timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "the app did not start"
            time.sleep(0.2)
    yield proc, url, cache
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_run_folders_are_removed_when_the_server_is_stopped(served, sig):
    proc, url, cache = served
    files = Client(url, verbose=False).predict("gru", 32, 1, "sgd", 1.0, "sequential", 35, 32, "book", 1,
                                               "time traveller", True, "", "book", api_name="/train")[4]
    [root] = list(cache.glob("rnn-zoo-runs-*"))
    assert len(files) == 2 and len(list(root.rglob("model.safetensors"))) == 1
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert not root.exists()
