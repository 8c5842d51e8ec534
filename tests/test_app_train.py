"""The Train tab through gradio_client against the launched app: a short run streams falling perplexity and
ends with a model that the Sample and Perplexity tabs then use and that downloads as a model folder; two
runs share the plot; Stop ends a run; a cancelled or abandoned run frees its place; the limits (one run per
visitor, the server's runs at once, the model size) refuse with a clear message; other tabs answer meanwhile.
Small models (32 hidden units) and runs of a few seconds."""
import shutil
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch
from app_fixtures import SPACE
from gradio_client import Client
from gradio_client.exceptions import AppError

from zoo.checkpoint import load_json, load_model
from zoo.evaluate import score

if str(SPACE) not in sys.path:
    sys.path.insert(0, str(SPACE))

import train_runs  # noqa: E402
from train_runs import CLIENT_SECONDS, WINDOW, Runs, Session  # noqa: E402

SETTINGS = dict(name="gru", hidden=32, layers=1, optimizer="sgd", lr=1.0, batching="sequential", num_steps=35,
                batch_size=32, text="book", seconds=3, prompt="time traveller", compare=True, pasted="", mode="book")


def submit(client, **overrides):
    return client.submit(*{**SETTINGS, **overrides}.values(), api_name="/train")


def curves(plot) -> dict[str, list[tuple[float, float]]]:
    """The plot's points by curve: {"this run: training": [(epoch, perplexity), ...], ...}; every curve name is
    there from the start, with an empty point (no perplexity) until it has a real one."""
    out: dict[str, list] = {}
    for row in plot["data"] if plot else []:
        point = dict(zip(plot["columns"], row))
        points = out.setdefault(point["curve"], [])
        if point["perplexity"] is not None:
            points.append((point["epoch"], point["perplexity"]))
    return out


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout} s for {what}")
        time.sleep(0.05)


def training(job, updates: int = 2, timeout: float = 30) -> None:
    """Wait until the run has streamed `updates` updates about its epochs."""
    wait_for(lambda: sum("· epoch" in str(out[0]) for out in job.outputs()) >= updates, timeout, "training updates")


@pytest.fixture
def client(app):
    """A new visitor (a session of its own); waits for the server's runs to end before and after."""
    runs = app.module.train_runs
    wait_for(lambda: runs.training() == 0, 30, "the runs of earlier tests to end")
    yield Client(app.url, verbose=False)
    wait_for(lambda: runs.training() == 0, 30, "this test's runs to end")


# ---------------------------------------------------------------------------- a run, its model, its files

def test_a_short_run_streams_falling_perplexity_and_ends_with_a_model(client, tmp_path):
    job = submit(client)
    streamed = [out for out in job if "· epoch" in str(out[0])]
    status, plot, greedy, sampled, files = job.result()
    assert len(streamed) >= 3                                    # ~4 a second
    train = [p for _, p in curves(plot)["this run: training"]]
    assert train[0] > 20 and train[-1] < 0.7 * train[0]          # from a blind guess (28) down
    assert len(curves(plot)["this run: validation"]) >= 3 and curves(plot)["previous run: training"] == []
    first, last = (float(out[0].split("training perplexity ")[1].split()[0]) for out in (streamed[0], streamed[-1]))
    assert last < first
    assert "time is up after" in status and "your model" in status and "tokens/s" in status
    assert greedy.startswith("time traveller") and sampled.startswith("time traveller") and greedy != sampled

    folder = tmp_path / "downloaded"                             # the two files make a model folder
    folder.mkdir()
    for path in files:
        shutil.copy(path, folder)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    config = load_json(folder / "config.json")
    assert config["name"] == "gru" and config["model"]["num_hiddens"] == 32
    assert config["recipe"]["time_budget"] == 3 and config["recipe"]["train_tokens"] == 10_000
    assert config["metrics"]["valid_perplexity"] < train[0]
    load_model(folder)


def test_a_visitors_own_text_and_an_exercise_variant_train_with_their_own_vocabulary_and_split(client, tmp_path):
    """Pasted text, read character by character (case and punctuation kept), trains a variant of the book's
    cells; the model it makes knows that text's characters and was validated on that text."""
    text = "".join(f"Line {i}: The Quick Brown Fox; jumps over {i % 7} lazy dogs!\n" for i in range(400))
    job = submit(client, name="gru-update-only", text="yours", pasted=text, mode="chars", prompt="Line 3")
    status, plot, greedy, sampled, files = job.result()
    assert "your text" in status and "gru-update-only" in status and greedy.startswith("Line 3")
    folder = tmp_path / "yours"
    folder.mkdir()
    for path in files:
        shutil.copy(path, folder)
    model = load_model(folder)
    assert model.tokenizer.mode == "chars" and {"Q", ";", "!", "\n"} <= set(model.tokenizer.tokens)
    assert model.info["data"]["name"] == "your text" and model.info["data"]["characters"] == len(text)
    assert model.info["metrics"]["valid_perplexity"] < len(model.tokenizer)


def test_the_trained_model_joins_the_other_tabs_and_two_runs_share_the_plot(client, tmp_path, app):
    first = submit(client, seconds=2).result()
    second = submit(client, name="rnn", seconds=2, lr=2.0).result()
    assert curves(second[1])["previous run: validation"] == curves(first[1])["this run: validation"]
    assert all(curves(second[1]).values())                        # the two runs on one plot
    assert "rnn, 32 hidden, sgd lr 2" in second[0] and "**previous run**: run 1 (gru, 32 hidden" in second[0]

    out = client.predict("time traveller", 40, "greedy", 0.8, 0, 1.0, 0, ["gru"], api_name="/sample")
    info, text = out[-2], out[-1]
    assert info.startswith("**your run 2**: rnn, 32 hidden") and "chars/s" in info
    assert "".join(p["token"] for p in text) == second[2][:len("time traveller") + 40]   # the Train tab's greedy
    other = Client(app.url, verbose=False).predict("time traveller", 40, "greedy", 0.8, 0, 1.0, 0, ["gru"],
                                                   api_name="/sample")
    assert other[-1] is None and "Train a model" in other[-2]          # another visitor does not see it

    passage = "the time traveller smiled at us"
    _, table, _, *coloured = client.predict(passage, api_name="/perplexity")
    rows = {row[0]: row[1] for row in table["data"]}
    folder = tmp_path / "run2"
    folder.mkdir()
    for path in second[4]:
        shutil.copy(path, folder)
    pretrained = load_model(folder)
    expected = score(pretrained.model, torch.tensor(pretrained.tokenizer.encode(passage))).perplexity
    assert rows["your run 2"] == pytest.approx(expected, abs=1e-3)
    assert coloured[-1]["label"].startswith("your run 2 (rnn, 32 hidden")


# ---------------------------------------------------------------------------- stop, close, limits

def test_stop_ends_a_run_at_once_and_keeps_its_model(client, app):
    job = submit(client, seconds=60)
    training(job)
    started = time.monotonic()
    sampled = Client(app.url, verbose=False).predict("time traveller", 100, "sample", 0.8, 0, 1.0, 1, ["gru", "lstm"],
                                                     api_name="/sample")
    assert time.monotonic() - started < 10 and sampled[-1] is None     # other tabs answer while it trains
    client.predict(api_name="/stop_training")
    stopped = time.monotonic()
    status, _, _, _, files = job.result(timeout=30)
    assert time.monotonic() - stopped < 10
    assert ", stopped after" in status and len(files) == 2


def test_a_cancelled_or_abandoned_run_frees_its_place_and_keeps_nothing(client, app):
    runs = app.module.train_runs
    job = submit(client, seconds=60)
    training(job)
    job.cancel()                                     # what the page does when its event is cancelled
    wait_for(lambda: runs.training() == 0, 10, "the cancelled run to end")

    job = submit(client, seconds=60)
    training(job)
    runs.stop(client.session_hash, "127.0.0.1", closed=True)   # what demo.unload does when the page is closed
    status, *_, files = job.result(timeout=30)
    assert "your model" not in status and not isinstance(files, list)     # no model, no files
    wait_for(lambda: runs.training() == 0, 10, "the abandoned run to end")


def from_address(app, address: str) -> Client:
    """A visitor at another address: the test server trusts X-Forwarded-For from 127.0.0.1, as uvicorn does
    behind a local proxy, so gr.Request gives this address."""
    return Client(app.url, verbose=False, headers={"X-Forwarded-For": address})


def test_one_run_per_visitor_and_a_few_at_a_time_on_the_server(client, app):
    limit = app.module.TRAIN_RUNS
    others = [from_address(app, f"10.0.0.{i + 2}") for i in range(limit)]
    jobs = [submit(client, seconds=60)] + [submit(other, seconds=60) for other in others[:limit - 1]]
    for job in jobs:
        training(job, updates=1)
    with pytest.raises(AppError, match=r"still training: press Stop.*one run at a time per visitor"):
        submit(client).result()
    with pytest.raises(AppError, match=rf"trains {limit} models? at a time .* press Train again in about \d+ s"):
        submit(others[-1]).result()
    for visitor in [client] + others[:limit - 1]:
        visitor.predict(api_name="/stop_training")
    for job in jobs:
        assert ", stopped after" in job.result(timeout=30)[0]
    assert "time is up" in submit(others[-1], seconds=1).result()[0]   # the places are free again


@pytest.mark.parametrize("settings, message", [
    (dict(name="lstm", hidden=1024, layers=4), r"has 29,536,284 parameters; the limit here is 2,000,000"),
    (dict(name="ngram"), "not in the list of choices"),
    (dict(hidden=2000), "greater than maximum value 1024"),
    (dict(hidden=32.5), "hidden size must be a whole number"),
    (dict(lr=0), "learning rate must be a number from 1e-05 to 10"),
    (dict(seconds=61), "greater than maximum value 60"),
    (dict(batching="shuffled"), "not in the list of choices"),
    (dict(prompt="1895!"), "read this prompt as nothing at all"),
    (dict(prompt=""), "prompt is empty"),
    (dict(text="yours"), "Your text is empty"),
    (dict(text="yours", pasted="just a few words"), "too short to train on"),
    (dict(text="yours", pasted="x" * 1_000_001), "the limit here is 1,000,000"),
])
def test_bad_settings_get_a_clear_message(client, settings, message):
    with pytest.raises(AppError, match=message):
        submit(client, **settings).result()


def test_a_fresh_session_from_the_same_address_does_not_get_a_second_run(client, app):
    """One run per visitor holds for a script that opens a new session per request: the address counts."""
    job = submit(client, seconds=60)
    training(job)
    with pytest.raises(AppError, match="still training.*one run at a time per visitor"):
        submit(Client(app.url, verbose=False)).result()           # same address, new session
    assert "time is up" in submit(from_address(app, "10.0.1.1"), seconds=1).result()[0]   # the server has room
    client.predict(api_name="/stop_training")
    assert ", stopped after" in job.result(timeout=30)[0]


def test_only_the_visitor_who_started_a_run_can_stop_it(client, app):
    job = submit(client, seconds=60)
    training(job)
    Client(app.url, verbose=False).predict(api_name="/stop_training")      # another session, same address
    response = httpx.post(f"{app.url}gradio_api/run/stop_training", timeout=10, headers={"X-Forwarded-For": "10.0.2.1"},
                          json={"data": [], "session_hash": client.session_hash})   # the session's id, from elsewhere
    assert response.status_code == 200
    time.sleep(1.0)
    assert app.module.train_runs.training() == 1 and not job.done()
    httpx.post(f"{app.url}gradio_api/run/stop_training", json={"data": [], "session_hash": client.session_hash},
               timeout=10)                                        # the same request from the visitor's address
    assert ", stopped after" in job.result(timeout=30)[0]


def test_the_trained_files_are_served_from_the_runs_folder_without_a_copy(client, app):
    """gr.File serves the run's own files (they live in Gradio's cache folder), so a run costs one copy on disk."""
    job = Client(app.url, verbose=False, download_files=False).submit(*{**SETTINGS, "seconds": 1}.values(),
                                                                      api_name="/train")
    files = job.result()[4]
    root = app.module.train_runs.root
    assert len(files) == 2 and all(Path(f["path"]).parent.parent.parent == root for f in files)


def test_the_runs_registry_counts_and_frees_places():
    runs = Runs(limit=2)
    a, b = runs.start("a", "1.1.1.1", 10), runs.start("b", "2.2.2.2", 10)
    with pytest.raises(Exception, match="trains 2 models at a time"):
        runs.start("c", "3.3.3.3", 10)
    with pytest.raises(Exception, match="one run at a time per visitor"):
        runs.start("d", "1.1.1.1", 10)                     # another session, the same address
    assert not runs.stop("a", "9.9.9.9") and not a.stop.is_set()      # not from another address
    assert runs.stop("a", "1.1.1.1") and a.stop.is_set() and not a.closed
    assert runs.stop("b", "2.2.2.2", closed=True) and b.closed and not runs.stop("c", "3.3.3.3")
    runs.end(a)
    assert runs.training() == 1 and runs.start("c", "3.3.3.3", 10)


def test_an_address_is_granted_a_few_minutes_of_training_an_hour():
    now = [1000.0]
    runs = Runs(limit=2, clock=lambda: now[0])
    for _ in range(CLIENT_SECONDS // 60):
        ticket = runs.start(f"s{now[0]}", "1.1.1.1", 60)
        now[0] += 60
        runs.end(ticket)
    with pytest.raises(Exception, match=rf"trained for {CLIENT_SECONDS} s in the last hour.*about 50 min"):
        runs.start("fresh", "1.1.1.1", 60)
    runs.end(runs.start("other", "2.2.2.2", 60))           # another address has its own budget
    short = runs.start("stopped", "2.2.2.2", 60)
    now[0] += 5
    runs.end(short)                                        # stopped after 5 s: charged 5 s, not 60
    now[0] = 1000.0 + WINDOW + 1
    runs.end(runs.start("an hour later", "1.1.1.1", 60))


def test_run_folders_are_capped_across_visitors_oldest_first(tmp_path, monkeypatch):
    monkeypatch.setattr(train_runs, "MAX_FOLDERS", 3)
    monkeypatch.setattr(train_runs, "MAX_FOLDER_BYTES", 2500)
    runs, kept = Runs(limit=1), []
    for i, size in enumerate([1000, 1000, 400, 400, 1200]):
        run = Session().new_run(f"visitor {i}")
        run.folder = str(runs.root / str(i))
        Path(run.folder).mkdir()
        (Path(run.folder) / "model.safetensors").write_bytes(b"x" * size)
        run.size, run.pretrained = size, object()
        runs.keep(run)
        kept.append(run)
        assert len(list(runs.root.iterdir())) <= 3 and sum(r.size for r in kept if r.folder) <= 2500
    assert [bool(r.folder) for r in kept] == [False, False, True, True, True]   # 400 + 400 + 1200
    assert sorted(p.name for p in runs.root.iterdir()) == ["2", "3", "4"] and kept[0].pretrained is None


def test_the_plot_shows_the_newest_run_and_the_previous_one_when_comparing():
    session = Session()
    for n, perplexity in enumerate([20.0, 10.0], start=1):
        run = session.new_run(f"run {n}")
        run.points = [{"epoch": 1.0, "seconds": 0.5, "perplexity": perplexity, "curve": "train"}]

    def shown():
        frame = session.frame().dropna()
        return dict(zip(frame.curve, frame.perplexity))
    assert shown() == {"this run: training": 10.0, "previous run: training": 20.0}
    session.compare = False
    assert shown() == {"this run: training": 10.0}
    assert set(session.frame().curve) == {"this run: training", "this run: validation", "previous run: training",
                                          "previous run: validation"}       # every curve, points or not


def test_a_visitor_keeps_the_models_of_their_last_two_runs(tmp_path):
    session = Session()
    for i in range(3):
        run = session.new_run(f"run {i}")
        run.folder = str(tmp_path / str(i))
        (tmp_path / str(i)).mkdir()
        run.pretrained = object()
    assert [r.pretrained is not None for r in session.runs] == [False, True, True]
    assert not (tmp_path / "0").exists() and (tmp_path / "2").exists()
    assert session.model is session.runs[-1]
