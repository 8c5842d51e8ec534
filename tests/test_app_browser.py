"""The app end to end in a real headless Chromium: type a prompt and see every model's panel filled, score a
text and see the table and the coloured text, open the training and gates views, train a model and watch its
plot grow, stop a run, close a page that trains; screenshots are kept as artifacts ($ZOO_SCREENSHOTS, default
artifacts/screenshots). Every request must stay on 127.0.0.1: the page loads nothing from the internet (fonts,
CDNs, analytics)."""
import os
import shutil
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
from app_fixtures import CORRUPTED

from zoo.models import BOOK

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(os.environ.get("ZOO_SCREENSHOTS", Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"))
SHOWN = [name for name in BOOK if name not in (CORRUPTED, "ngram")]   # ngram is shown on request
LOADED = SHOWN + ["ngram"]


@pytest.fixture(scope="module")
def page(app):
    if not Path(CHROMIUM).exists():
        pytest.skip("the browser test needs Chromium: apt-get install chromium")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.requests = []
        page.on("request", lambda request: page.requests.append(request.url))
        page.goto(app.url)
        page.locator("#prompt textarea").wait_for()
        yield page
        browser.close()


def text_of(page, selector: str) -> str:
    return page.locator(selector).inner_text()


def test_every_model_answers_the_prompt(page):
    assert page.locator("#panel-ngram").is_hidden()
    page.locator("#prompt textarea").fill("the time machine")
    page.locator("#generate").click()
    page.wait_for_function("names => names.every(n => document.querySelector(`#info-${n}`)"
                           "?.innerText.includes('chars/s'))", arg=SHOWN, timeout=30_000)
    for name in SHOWN:
        assert text_of(page, f"#sample-{name}").replace("\n", "").startswith("the time machine")
    assert "corrupt or truncated" in text_of(page, f"#info-{CORRUPTED}")
    page.screenshot(path=SHOTS / "sample.png", full_page=True)


def test_the_chosen_models_are_shown(page):
    page.locator("#shown").get_by_label("rnn-scratch", exact=True).uncheck()
    page.locator("#panel-rnn-scratch").wait_for(state="hidden")
    page.locator("#shown").get_by_label("rnn-scratch", exact=True).check()
    page.locator("#shown").get_by_label("ngram", exact=True).check()
    page.locator("#panel-ngram").wait_for(state="visible")
    page.locator("#generate").click()
    page.wait_for_function("() => document.querySelector('#info-ngram').innerText.includes('chars/s')")


def test_a_pasted_text_gets_its_table_and_coloured_text(page):
    page.get_by_role("tab", name="Perplexity").click()
    page.locator("#text textarea").fill("It was the best of times, it was the worst of times. The time traveller "
                                        "smiled at us. Café, 1895!")
    page.locator("#score").click()
    page.wait_for_function("() => document.querySelector('#ppl-table')?.innerText.includes('ngram')",
                           timeout=30_000)
    table = text_of(page, "#ppl-table")
    assert all(name in table for name in LOADED)
    assert "'é'" in text_of(page, "#ppl-status")
    page.locator("#ppl-chart img").wait_for()
    coloured = page.locator("#surprisal-gru")
    assert "it was the best of times" in coloured.inner_text().replace("\n", "")
    assert "perplexity" in coloured.inner_text()
    page.screenshot(path=SHOTS / "perplexity.png", full_page=True)


def test_an_example_fills_the_text(page):
    page.get_by_role("tab", name="Perplexity").click()
    page.locator("#example input").click()
    page.get_by_role("option", name="A Tale of Two Cities, Charles Dickens (1859, public domain)").click()
    page.wait_for_function("() => document.querySelector('#text textarea').value.startsWith('It was the best')")


def test_training_view(page):
    page.get_by_role("tab", name="Training").click()
    page.locator("#training-plot img").wait_for()
    assert all(name in text_of(page, "#training-table") for name in BOOK)
    page.screenshot(path=SHOTS / "training.png", full_page=True)


def test_gates_view(page):
    page.get_by_role("tab", name="Inside the gates").click()
    page.locator("#gates-run").click()
    page.locator("#gates-plot img").wait_for(timeout=30_000)
    page.screenshot(path=SHOTS / "gates.png", full_page=True)


def test_a_bad_input_shows_a_message_and_keeps_the_last_answers(page):
    page.get_by_role("tab", name="Sample side by side").click()
    before = text_of(page, "#sample-gru")
    page.locator("#prompt textarea").fill("   ")
    page.locator("#generate").click()
    page.get_by_text("The prompt is empty: type or paste some text.").wait_for()
    assert "Traceback" not in page.content() and text_of(page, "#sample-gru") == before
    page.screenshot(path=SHOTS / "bad-input.png", full_page=True)


def set_number(page, elem_id: str, value) -> None:
    """Type into a slider's number box."""
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def start_training(page, seconds: int) -> None:
    """A small run (32 hidden units) of `seconds`, started; returns once the plot has drawn its first lines."""
    page.get_by_role("tab", name="Train", exact=True).click()
    set_number(page, "train-hidden", 32)
    set_number(page, "train-seconds", seconds)
    page.locator("#train-start").click()
    page.wait_for_function(f"() => {LINES}.some(n => n > 0)", timeout=30_000)


# how much of each line of the training plot is drawn (Vega's SVG paths): grows with every update
LINES = "[...document.querySelectorAll('#train-plot .mark-line path')].map(p => (p.getAttribute('d') || '').length)"


def test_a_trained_model_draws_its_curves_as_it_learns(page):
    start_training(page, seconds=4)
    drawn = page.evaluate(f"() => {LINES}")
    page.wait_for_function(f"before => {LINES}.some((n, i) => n > before[i])", arg=drawn, timeout=10_000)
    assert "· epoch" in text_of(page, "#train-status") and "tokens/s" in text_of(page, "#train-status")
    page.screenshot(path=SHOTS / "train-running.png", full_page=True)
    page.wait_for_function("() => document.querySelector('#train-status').innerText.includes('your model')",
                           timeout=30_000)
    assert "time is up after" in text_of(page, "#train-status")
    assert "model.safetensors" in text_of(page, "#train-files") and "config.json" in text_of(page, "#train-files")
    assert page.locator("#train-greedy textarea").input_value().startswith("time traveller")
    page.screenshot(path=SHOTS / "train-done.png", full_page=True)

    page.get_by_role("tab", name="Sample side by side").click()       # the model joins the other tabs
    page.locator("#prompt textarea").fill("time traveller")
    page.locator("#generate").click()
    page.wait_for_function("() => document.querySelector('#info-yours').innerText.includes('chars/s')",
                           timeout=30_000)
    assert "your run 1" in text_of(page, "#info-yours")
    assert text_of(page, "#sample-yours").replace("\n", "").startswith("time traveller")


def test_stop_ends_a_run_and_the_previous_run_stays_on_the_plot(page):
    start_training(page, seconds=60)
    page.wait_for_function("() => document.querySelector('#train-status').innerText.includes('· validation')")
    page.locator("#train-stop").click()
    page.wait_for_function("() => document.querySelector('#train-status').innerText.includes(', stopped after')",
                           timeout=15_000)
    assert "previous run: run 1" in text_of(page, "#train-status")
    assert all(n > 0 for n in page.evaluate(f"() => {LINES}"))       # both runs' curves
    page.screenshot(path=SHOTS / "train-stopped.png", full_page=True)


def test_closing_the_page_stops_its_run(page, app):
    other = page.context.browser.new_page(viewport={"width": 1400, "height": 1000})    # another visitor
    other.goto(app.url)
    start_training(other, seconds=60)
    assert app.module.train_runs.training() == 1
    other.close()
    deadline = time.monotonic() + 15
    while app.module.train_runs.training() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert app.module.train_runs.training() == 0


def test_the_defaults_follow_the_model_and_the_optimizer(page):
    page.get_by_role("tab", name="Train", exact=True).click()
    page.locator("#train-model input").click()
    page.get_by_role("option", name="deep-lstm", exact=True).click()      # the book trains it with lr 2
    page.wait_for_function("() => document.querySelector('#train-lr input').value === '2'")
    assert page.locator("#train-layers input[type=number]").input_value() == "2"
    page.locator("#train-optimizer").get_by_label("adamw").check()
    page.wait_for_function("() => document.querySelector('#train-lr input').value === '0.004'")


def test_an_exercise_and_its_run_in_the_train_tab(page):
    page.get_by_role("tab", name="Exercises").click()
    page.locator("#exercise-pick input").click()
    page.get_by_role("option", name="9.1.4: Only a reset gate, or only an update gate: what happens?").click()
    page.wait_for_function("() => document.querySelector('#exercise-page').innerText.includes('Answer.')")
    page.locator("#exercise-plot img").wait_for()
    assert "gru-update-only" in text_of(page, "#exercise-page")
    page.screenshot(path=SHOTS / "exercises.png", full_page=True)
    page.locator("#exercise-run input").click()
    page.get_by_role("option", name="update gate only", exact=True).click()
    page.locator("#exercise-train").click()
    page.wait_for_function("() => document.querySelector('#train-model input').value === 'gru-update-only'")
    assert page.locator("#train-optimizer").get_by_label("adamw").is_checked()


def test_every_request_stays_on_this_machine(page, app):
    here = urlparse(app.url).netloc
    outside = [url for url in page.requests if not url.startswith(("data:", "blob:")) and urlparse(url).netloc != here]
    assert not outside, outside
