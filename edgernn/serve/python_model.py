"""edgernn's streams under Triton's sequence batcher: the python-backend model. Torch-free.

A repository written with `--triton-backend python` holds the exported file unchanged
(NAME/1/model.onnx) and a two-line NAME/1/model.py that imports TritonPythonModel from here.
Triton's "oldest" sequence batcher hands `execute` the oldest pending request of up to
max_batch_size live sequences (never two of one sequence); each request carries its frames x
[1, T, F] and the control inputs START, END, READY and CORRID. This model keeps each sequence's
state by correlation id as one stream of a `Batch`, and steps all the requests of one `execute`
in one batched edgernn call (one per distinct T).

    START   the sequence's state is (re)set to zeros before its frames run
    END     the state is freed after its frames run
    idle    Triton drops a sequence silent for max_sequence_idle_microseconds without telling the
            model, so the model drops the state of any sequence silent that long itself

The controls always take effect; a request whose frames are malformed gets an error response for
its sequence alone, and that sequence's state does not advance. The live-state count is the
`edgernn_live_sequences` gauge on Triton's metrics port (and the counters started, ended,
evicted), and a log line whenever idle states are dropped. State lives in the server process: a
restarted server has none, and a client must start its sequences again.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgernn.core.errors import EdgeRNNError, InputError
from edgernn.runtime import checks


@dataclass
class Request:
    """One request as the model sees it: x (T, F) or (T,) for tokens."""
    corrid: int
    x: np.ndarray
    start: bool = False
    end: bool = False


@dataclass
class Counts:
    started: int = 0
    ended: int = 0
    evicted: int = 0
    errors: int = 0
    calls: int = 0
    live: int = field(default=0)


class Sequences:
    """Per-correlation-id states on one Batch, with the time each was last seen."""

    def __init__(self, runtime, *, idle_timeout_s: float, clock=time.monotonic):
        self.runtime, self.idle_timeout_s, self.clock = runtime, float(idle_timeout_s), clock
        self.batch = runtime.batch()
        self._sid: dict[int, int] = {}   # corrid -> Batch stream id
        self._seen: dict[int, float] = {}
        self.counts = Counts()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sid)

    def __contains__(self, corrid) -> bool:
        return corrid in self._sid

    def run(self, requests: list) -> list:
        """One result per request, in order: y (T, outputs), or the EdgeRNNError for that request."""
        with self._lock:
            now = self.clock()
            out: list = [None] * len(requests)
            rounds: list[dict] = []  # a sequence twice in one call (never under "oldest"): two rounds
            for k, r in enumerate(requests):
                err = self._control(r, now)
                if err is None:
                    err, frames = self._frames(r)
                if err is not None:
                    out[k] = err
                    self.counts.errors += 1
                    continue
                rnd = next((d for d in rounds if r.corrid not in d), None)
                if rnd is None:
                    rnd = {}
                    rounds.append(rnd)
                rnd[r.corrid] = (k, frames)
            for rnd in rounds:
                self._step(rnd, out)
            for r in requests:
                if r.end and r.corrid in self._sid:
                    self._close(r.corrid)
                    self.counts.ended += 1
            self.counts.live = len(self._sid)
            return out

    def evict(self) -> list:
        """Drop the states of sequences silent longer than the idle timeout; returns their ids."""
        with self._lock:
            limit = self.clock() - self.idle_timeout_s
            gone = [c for c, t in self._seen.items() if t < limit]
            for c in gone:
                self._close(c)
            self.counts.evicted += len(gone)
            self.counts.live = len(self._sid)
            return gone

    def close_all(self) -> None:
        with self._lock:
            for c in list(self._sid):
                self._close(c)
            self.counts.live = 0

    # -- internals -------------------------------------------------------------------------------
    def _control(self, r: Request, now: float):
        if r.start:
            if r.corrid in self._sid:
                self._close(r.corrid)
            self._sid[r.corrid] = self.batch.open()
            self.counts.started += 1
        elif r.corrid not in self._sid:
            return InputError(f"sequence {r.corrid}: no state on this server (never started, dropped after "
                              f"{self.idle_timeout_s:g} s idle, or the server restarted); expected sequence_start "
                              "on its first request")
        self._seen[r.corrid] = now
        return None

    def _frames(self, r: Request):
        try:
            x = checks.check_frames(self.runtime, r.x)
            if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
                raise checks.nonfinite_frame(f"sequence {r.corrid}: frames")
        except EdgeRNNError as e:
            msg = str(e)
            return (type(e)(msg if msg.startswith("sequence ") else f"sequence {r.corrid}: {msg} "
                                                                    "(its state did not advance)"), None)
        if len(x) == 0:
            return InputError(f"sequence {r.corrid}: no frames; expected x of shape [1, T, ...] with T >= 1"), None
        return None, x

    def _step(self, rnd: dict, out: list) -> None:
        try:
            ys = self.batch.feed({self._sid[c]: f for c, (_, f) in rnd.items()})
        except EdgeRNNError as e:  # one batched call failed as a whole: every request of it learns why
            for c, (k, _) in rnd.items():
                out[k] = type(e)(f"sequence {c}: {e}")
            return
        self.counts.calls += 1
        for c, (k, _) in rnd.items():
            out[k] = ys[self._sid[c]]

    def _close(self, corrid: int) -> None:
        self.batch.close(self._sid.pop(corrid))
        self._seen.pop(corrid, None)


def _scalar(request, name: str, pb_utils, default=0):
    t = pb_utils.get_input_tensor_by_name(request, name)
    return default if t is None else t.as_numpy().reshape(-1)[0]


class TritonPythonModel:
    """Triton's python-backend interface (initialize / execute / finalize) around Sequences."""

    def initialize(self, args):
        import triton_python_backend_utils as pb_utils

        from edgernn.runtime.engine import Runtime

        self.pb = pb_utils
        cfg = json.loads(args["model_config"])
        self.name = cfg["name"]
        self.x_name = cfg["input"][0]["name"]
        self.y_name = cfg["output"][0]["name"]
        idle_us = int(cfg.get("sequence_batching", {}).get("max_sequence_idle_microseconds") or 1_000_000)
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.seqs = Sequences(Runtime(path, threads=1), idle_timeout_s=idle_us / 1e6)
        self._metrics = _Metrics(pb_utils, self.name)
        self._stop, self._dropped = threading.Event(), []
        self._reaper = threading.Thread(target=self._reap, name="edgernn-idle", daemon=True)
        self._reaper.start()
        pb_utils.Logger.log_info(f"edgernn: {self.name} serving {path.name}, idle timeout {idle_us / 1e6:g} s")

    def execute(self, requests):
        pb = self.pb
        parsed, out = [], []
        for req in requests:
            x = pb.get_input_tensor_by_name(req, self.x_name).as_numpy()
            parsed.append(Request(int(_scalar(req, "CORRID", pb)), x[0] if x.ndim and len(x) == 1 else x,
                                  start=bool(_scalar(req, "START", pb)), end=bool(_scalar(req, "END", pb))))
        self._dropped.extend(n for n in [len(self.seqs.evict())] if n)
        for r, y in zip(parsed, self.seqs.run(parsed)):
            if isinstance(y, Exception):
                out.append(pb.InferenceResponse(output_tensors=[], error=pb.TritonError(str(y))))
            else:
                out.append(pb.InferenceResponse(output_tensors=[pb.Tensor(self.y_name, np.ascontiguousarray(y[None]))]))
        self._report()
        return out

    def _reap(self):
        """Idle states dropped between calls too. Only pure-Python work happens on this thread: the
        stub's own calls (log, metrics) are not safe off its main thread, so execute reports them."""
        period = min(1.0, max(0.05, self.seqs.idle_timeout_s / 4))
        while not self._stop.wait(period):
            gone = self.seqs.evict()
            if gone:
                self._dropped.append(len(gone))

    def _report(self):
        while self._dropped:
            n = self._dropped.pop(0)
            self.pb.Logger.log_info(f"edgernn: {self.name} dropped {n} idle sequence state(s); live {len(self.seqs)}")
        self._metrics.update(self.seqs.counts)

    def finalize(self):
        self._stop.set()
        self._reaper.join(timeout=5)
        self.seqs.close_all()
        self._metrics.close()
        c = self.seqs.counts
        self.pb.Logger.log_info(f"edgernn: {self.name} finalized: started {c.started}, ended {c.ended}, "
                                f"evicted {c.evicted}, live 0")


class _Metrics:
    """edgernn_live_sequences (gauge) and edgernn_sequences_total{event=...} on Triton's metrics port."""

    def __init__(self, pb_utils, model: str):
        self._gauge = self._counters = None
        family = getattr(pb_utils, "MetricFamily", None)
        if family is None:  # an old python backend: the log lines remain
            return
        labels = {"model": model}
        # the families must outlive their metrics: Triton refuses a metric whose family is gone
        self._families = (family(name="edgernn_live_sequences", description="sequence states held by the model",
                                 kind=family.GAUGE),
                          family(name="edgernn_sequences_total", description="sequences by what happened to "
                                 "their state", kind=family.COUNTER))
        self._gauge = self._families[0].Metric(labels=labels)
        self._counters = {e: self._families[1].Metric(labels={**labels, "event": e})
                          for e in ("started", "ended", "evicted")}
        self._last = {e: 0 for e in self._counters}
        self._lock = threading.Lock()

    def close(self) -> None:
        """Metrics first, then their families (the other order crashes the stub at exit)."""
        if self._gauge is not None:
            with self._lock:
                self._gauge = self._counters = None
                self._families = None

    def update(self, counts: Counts) -> None:
        if self._gauge is None:
            return
        with self._lock:
            self._gauge.set(counts.live)
            for e, m in self._counters.items():
                now = getattr(counts, e)
                if now > self._last[e]:
                    m.increment(now - self._last[e])
                    self._last[e] = now
