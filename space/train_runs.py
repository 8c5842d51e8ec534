"""The Train tab's bookkeeping: the server's runs in progress (the limits, Stop, a closed page) and each
visitor's finished runs (their curves, trained models and files).

`Runs` is shared by every visitor: at most `limit` runs train at once and one per visitor (session), each
with a `Ticket` whose stop flag the Stop button and a closed page set; the training loop reads it between
two logs. `Session` is one visitor's (kept in a `gr.State`): the curves of their runs, for the plot, and the
models of the last ones, for the Sample and Perplexity tabs, with the folders offered for download.
"""
from __future__ import annotations

import atexit
import math
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from inputs import refuse
from loader import Slot

from zoo.checkpoint import Pretrained
from zoo.train import TrainLog

KEPT = 2            # a visitor's runs whose models and files are kept: the latest two, which the plot compares
POINT_EVERY = 0.2   # seconds of training between two points of a curve on the plot
COLUMNS = {"epoch": float, "seconds": float, "perplexity": float, "curve": str}   # the plot's data
CURVES = {"train": "training", "valid": "validation"}
COLOURS = {"this run: training": "#93c5fd", "this run: validation": "#1d4ed8",       # light: training,
           "previous run: training": "#fdba74", "previous run: validation": "#c2410c"}  # dark: validation
FINISHING = 5.0     # seconds a run takes after its time limit (scoring, saving), in the wait announced to others


@dataclass
class Ticket:
    """One run in progress: whose it is, when it ends at the latest, and whether it should stop."""
    session: str
    ends: float                                    # time.monotonic() by which it is over
    stop: threading.Event = field(default_factory=threading.Event)
    closed: bool = False                           # the page is gone: stop without finishing the model


class Runs:
    """The runs training on this server, by visitor: at most `limit` at once, one per visitor; and the
    folder that holds their trained models while their visitors' sessions last (deleted at exit)."""

    def __init__(self, limit: int):
        self.limit = limit
        self._lock = threading.Lock()
        self._active: dict[str, Ticket] = {}
        self.root = Path(tempfile.mkdtemp(prefix="rnn-zoo-runs-"))
        atexit.register(shutil.rmtree, self.root, True)

    def start(self, session: str, seconds: float) -> Ticket:
        """A ticket for a new run, or a refusal that says why and when to try again."""
        with self._lock:
            if session in self._active:
                raise refuse("Your previous run is still training: press Stop, or wait for it to end "
                             "(one run at a time per visitor).")
            if len(self._active) >= self.limit:
                wait = max(0.0, min(t.ends for t in self._active.values()) - time.monotonic())
                busy = "1 run is" if self.limit == 1 else f"{self.limit} runs are"
                raise refuse(f"This server trains {self.limit} model{'s' * (self.limit > 1)} at a time and "
                             f"{busy} training for other visitors: press Train again in about {wait:.0f} s.")
            ticket = self._active[session] = Ticket(session, time.monotonic() + seconds + FINISHING)
            return ticket

    def end(self, ticket: Ticket) -> None:
        """The run is over (finished, stopped, failed or abandoned): its place is free."""
        with self._lock:
            if self._active.get(ticket.session) is ticket:
                del self._active[ticket.session]

    def stop(self, session: str | None, closed: bool = False) -> bool:
        """Ask the visitor's run to stop at its next log; False when they have none."""
        with self._lock:
            ticket = self._active.get(session)
        if ticket is None:
            return False
        ticket.closed = ticket.closed or closed
        ticket.stop.set()
        return True

    def training(self) -> int:
        """How many runs are training now."""
        with self._lock:
            return len(self._active)


# ---------------------------------------------------------------------------- one visitor's runs

@dataclass
class Run:
    """One run of a visitor: its settings as a label, its curves, and, once finished, its model and files."""
    number: int
    label: str                                       # "gru, 256 hidden, sgd lr 1, sequential"
    points: list[dict] = field(default_factory=list)  # {"epoch", "seconds", "perplexity", "curve": train|valid}
    last: dict[str, float] = field(default_factory=dict)  # curve -> when its last point was taken
    pretrained: Pretrained | None = None
    folder: str = ""                                 # the model folder offered for download
    files: list[str] = field(default_factory=list)
    summary: str = ""

    @property
    def name(self) -> str:
        return f"run {self.number}"

    def add(self, log: TrainLog, every: float = POINT_EVERY) -> None:
        """A point of the training curve (the epoch's running perplexity) and, at a validation, of the
        validation curve; at most one per curve every `every` seconds of the run, so that the plot's data
        stays small however fast the model trains."""
        where = {"epoch": round(log.epoch, 3), "seconds": round(log.elapsed, 2)}
        for curve, value in (("train", log.train_perplexity), ("valid", log.valid_perplexity)):
            if value is not None and log.elapsed - self.last.get(curve, -every) >= every:
                self.points.append({**where, "perplexity": round(value, 4), "curve": curve})
                self.last[curve] = log.elapsed

    def discard(self) -> None:
        """Free the model and delete its files (the run stays on the plot)."""
        self.pretrained, self.files = None, []
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = ""


@dataclass
class Session:
    """A visitor's runs, newest last (the models and files of the last KEPT are kept), and whether their plot
    shows the previous run beside the newest (the checkbox sets it, so a run in progress follows it too)."""
    runs: list[Run] = field(default_factory=list)
    compare: bool = True

    def new_run(self, label: str) -> Run:
        run = Run(len(self.runs) + 1, label)
        self.runs.append(run)
        for old in self.runs[:-KEPT]:
            old.discard()
        return run

    @property
    def model(self) -> Run | None:
        """The newest run that has a trained model, or None."""
        return next((run for run in reversed(self.runs) if run.pretrained is not None), None)

    def frame(self) -> pd.DataFrame:
        """The plot's points: the newest run's ("this run: ..."), and the one before it ("previous run: ...")
        when comparing. Every curve name is always there, with an empty point where it has none: a LinePlot
        keeps the curves (colours) it was first drawn with and draws no line for a new one (Gradio 6.31)."""
        roles = zip(("this run", "previous run"), reversed(self.runs[-2:] if self.compare else self.runs[-1:]))
        points = [{**p, "curve": f"{role}: {CURVES[p['curve']]}"} for role, run in roles for p in run.points]
        points += [{"epoch": 0.0, "seconds": 0.0, "perplexity": math.nan, "curve": curve} for curve in COLOURS]
        return pd.DataFrame(points, columns=list(COLUMNS)).astype(COLUMNS)


def forget(session: Session | None) -> None:
    """What gr.State calls when a visitor's session expires: delete their files."""
    for run in session.runs if session else []:
        run.discard()


def yours(visitor: Session | None) -> Slot | None:
    """The visitor's newest trained model as a page slot ("your run 2"), or None."""
    run = visitor.model if visitor else None
    return Slot(f"your {run.name}", run.pretrained.source, run.pretrained) if run else None
