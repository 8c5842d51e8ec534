"""The Train tab's bookkeeping: the server's runs in progress (the limits, Stop, a closed page) and each
visitor's finished runs (their curves, trained models and files).

`Runs` is shared by every visitor: at most `limit` runs train at once; one per visitor, where a visitor is
both a session and a client address (a script that opens a fresh session per request is still one address),
and an address is granted at most CLIENT_SECONDS of training an hour. Each run has a `Ticket` whose stop flag
the Stop button and a closed page set, for the session and address that started it only; the training loop
reads it between two logs. The finished runs' folders are capped in number and bytes across all visitors,
oldest dropped first, and removed with their root at exit (app.py turns SIGTERM into the same clean exit as
Ctrl-C). `Session` is one visitor's (kept in a `gr.State`): the curves of their runs, for the plot, and the
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
MAX_FOLDERS = 20    # run folders kept on the server, every visitor's together (a run at the largest size: ~8 MB)
MAX_FOLDER_BYTES = 160 << 20
CLIENT_SECONDS = 600   # training seconds granted to one client address per WINDOW
WINDOW = 3600.0
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
    client: str                                    # the address that started it
    ends: float                                    # time.monotonic() by which it is over
    granted: list = field(default_factory=list)    # [start, seconds]: its entry in the address's hourly budget
    stop: threading.Event = field(default_factory=threading.Event)
    closed: bool = False                           # the page is gone: stop without finishing the model


class Runs:
    """The runs training on this server: at most `limit` at once, one per session and per client address,
    CLIENT_SECONDS an hour per address; and the folder under `parent` that holds their trained models (capped,
    deleted at exit). `clock` is time.monotonic, or a stand-in that tests move forward."""

    def __init__(self, limit: int, parent: str | Path | None = None, clock=time.monotonic):
        self.limit, self.clock = limit, clock
        self._lock = threading.Lock()
        self._active: dict[str, Ticket] = {}
        self._granted: dict[str, list[list[float]]] = {}   # client -> [start, seconds] within the last WINDOW
        self._kept: list[Run] = []                          # runs whose folders are on disk, oldest first
        if parent:
            Path(parent).mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="rnn-zoo-runs-", dir=parent))
        atexit.register(shutil.rmtree, self.root, True)

    def start(self, session: str, client: str, seconds: float) -> Ticket:
        """A ticket for a new run, or a refusal that says why and when to try again."""
        with self._lock:
            now = self.clock()
            if session in self._active or any(t.client == client for t in self._active.values()):
                raise refuse("Your previous run is still training: press Stop, or wait for it to end "
                             "(one run at a time per visitor).")
            self._granted = {c: kept for c, grants in self._granted.items()
                             if (kept := [g for g in grants if now - g[0] < WINDOW])}
            grants = self._granted.get(client, [])
            used = sum(g[1] for g in grants)
            if used + seconds > CLIENT_SECONDS:
                wait = WINDOW - (now - grants[0][0]) if grants else WINDOW
                raise refuse(f"You have trained for {used:.0f} s in the last hour, and a visitor may train "
                             f"{CLIENT_SECONDS} s an hour here: ask for fewer seconds, or try again in about "
                             f"{wait / 60:.0f} min.")
            if len(self._active) >= self.limit:
                wait = max(0.0, min(t.ends for t in self._active.values()) - now)
                busy = "1 run is" if self.limit == 1 else f"{self.limit} runs are"
                raise refuse(f"This server trains {self.limit} model{'s' * (self.limit > 1)} at a time and "
                             f"{busy} training for other visitors: press Train again in about {wait:.0f} s.")
            grant = [now, float(seconds)]
            self._granted.setdefault(client, []).append(grant)
            ticket = self._active[session] = Ticket(session, client, now + seconds + FINISHING, grant)
            return ticket

    def end(self, ticket: Ticket) -> None:
        """The run is over (finished, stopped, failed or abandoned): its place is free, and the address is
        charged the seconds it trained rather than those it asked for."""
        with self._lock:
            ticket.granted[1] = min(ticket.granted[1], self.clock() - ticket.granted[0])
            if self._active.get(ticket.session) is ticket:
                del self._active[ticket.session]

    def stop(self, session: str | None, client: str, closed: bool = False) -> bool:
        """Ask the run that this session started from this address to stop at its next log; False when there
        is none (another visitor's run is never theirs to stop)."""
        with self._lock:
            ticket = self._active.get(session)
        if ticket is None or ticket.client != client:
            return False
        ticket.closed = ticket.closed or closed
        ticket.stop.set()
        return True

    def keep(self, run: "Run") -> None:
        """Count a finished run's folder against the server's caps (MAX_FOLDERS, MAX_FOLDER_BYTES), dropping the
        oldest folders, whoever's, until it fits."""
        with self._lock:
            self._kept = [r for r in self._kept if r.folder] + [run]
            while len(self._kept) > 1 and (len(self._kept) > MAX_FOLDERS or
                                           sum(r.size for r in self._kept) > MAX_FOLDER_BYTES):
                self._kept.pop(0).discard()

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
    size: int = 0                                    # bytes in `folder`
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


def client_of(request) -> str:
    """The client address of a `gr.Request`: the peer's, or behind a proxy the forwarded one if uvicorn trusts
    that proxy (FORWARDED_ALLOW_IPS; by default only 127.0.0.1)."""
    client = getattr(request, "client", None)
    return getattr(client, "host", None) or "unknown"


def forget(session: Session | None) -> None:
    """What gr.State calls when a visitor's session expires: delete their files."""
    for run in session.runs if session else []:
        run.discard()


def yours(visitor: Session | None) -> Slot | None:
    """The visitor's newest trained model as a page slot ("your run 2"), or None."""
    run = visitor.model if visitor else None
    return Slot(f"your {run.name}", run.pretrained.source, run.pretrained) if run else None
