"""Stream through a model on a Triton server over one gRPC stream. Torch-free.

    remote = Remote("grpc://127.0.0.1:8001/kws")     # or Remote.from_url(...)
    s = remote.stream()                              # one sequence: its state lives on the server
    y = s.step(frame)                                # (F,) -> (outputs,)
    Y = s.feed(frames)                               # (T, F) -> (T, outputs), one request
    s.close()                                        # END: the server frees the state
    out = remote.step({sid: frame, ...})             # many sequences, sent together, batched by Triton

A sequence's first request carries sequence_start, its last sequence_end; `close` sends END on a
zero frame when the caller did not end it with its last frames. tritonclient[grpc] is imported
only here, when a Remote is made.
"""

from __future__ import annotations

import itertools
import json
import queue
import re
import secrets
import threading
from urllib.parse import urlparse

import numpy as np

from edgernn.core.errors import InputError

_TYPES = {"TYPE_FP32": ("FP32", np.float32), "TYPE_FP16": ("FP16", np.float16), "TYPE_FP64": ("FP64", np.float64),
          "TYPE_INT32": ("INT32", np.int32), "TYPE_INT64": ("INT64", np.int64)}
_SEQ = re.compile(r"sequence (\d+)")


class RemoteError(InputError):
    """The server refused one request (its message says why); other sequences are unaffected."""


def parse_url(url: str) -> tuple[str, str]:
    """grpc://HOST:PORT/NAME -> ("HOST:PORT", "NAME")."""
    u = urlparse(url)
    name = u.path.strip("/")
    if u.scheme != "grpc" or not u.hostname or not u.port or not name or "/" in name:
        raise InputError(f"{url!r}; expected grpc://HOST:PORT/MODEL, e.g. grpc://127.0.0.1:8001/kws")
    return f"{u.hostname}:{u.port}", name


def _grpc():
    try:
        import tritonclient.grpc as grpcclient
    except ImportError as e:
        raise InputError(f"a grpc:// model needs Triton's client: pip install 'edgernn[serve]' "
                         f"(tritonclient and grpcio) ({e})") from e
    return grpcclient


class Remote:
    """One model on a Triton server; every sequence of this object shares one gRPC stream."""

    def __init__(self, address: str, name: str, *, timeout: float = 30.0):
        grpcclient = self._g = _grpc()
        self.address, self.name, self.timeout = address, name, float(timeout)
        self.client = grpcclient.InferenceServerClient(address)
        try:
            ready = self.client.is_model_ready(name)
        except Exception as e:  # tritonclient's InferenceServerException, grpc's errors
            raise InputError(f"grpc://{address}: no Triton server answers ({_first_line(e)}); expected "
                             "`edgernn serve DIR` running there") from e
        if not ready:
            raise InputError(f"grpc://{address}/{name}: no such model ready on the server; expected one of "
                             f"{[m.name for m in self.client.get_model_repository_index().models]}")
        cfg = self.client.get_model_config(name, as_json=True)["config"]
        x, y = cfg["input"][0], cfg["output"][0]
        self.x_name, self.y_name = x["name"], y["name"]
        self.x_type, self.dtype = _TYPES[x["data_type"]]
        self.frame_shape = tuple(int(d) for d in x["dims"][1:])
        text = ((cfg.get("parameters") or {}).get("edgernn") or {}).get("string_value")
        self.meta = json.loads(text) if text else None
        self._results: queue.Queue = queue.Queue()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._started: set = set()
        self.client.start_stream(callback=lambda result, error: self._results.put((result, error)))

    @classmethod
    def from_url(cls, url: str, **kw) -> "Remote":
        return cls(*parse_url(url), **kw)

    @property
    def labels(self):
        return ((self.meta or {}).get("output") or {}).get("labels")

    @property
    def out_size(self):
        return ((self.meta or {}).get("output") or {}).get("size")

    def new_id(self) -> int:
        """A correlation id no other client is likely to pick (63 random bits)."""
        return secrets.randbits(63) | 1

    def stream(self, sequence_id: int | None = None) -> "RemoteStream":
        return RemoteStream(self, sequence_id or self.new_id())

    def step(self, frames: dict, *, end=()) -> dict:
        """{sequence id: frames (T, F) or frame (F,)} -> {id: y (T, outputs) or (outputs,), or a
        RemoteError for a request the server refused}; all requests go out before any answer is awaited."""
        with self._lock:
            sent = {}
            for sid, f in frames.items():
                one = np.ndim(f) == len(self.frame_shape)
                x = np.asarray(f, dtype=self.dtype)
                x = x[None] if one else x
                rid = str(next(self._ids))
                inp = self._g.InferInput(self.x_name, [1, *x.shape], self.x_type)
                inp.set_data_from_numpy(np.ascontiguousarray(x[None]))
                self.client.async_stream_infer(self.name, [inp], request_id=rid, sequence_id=int(sid),
                                               sequence_start=sid not in self._started,
                                               sequence_end=sid in end)
                self._started.add(sid)
                sent[rid] = (sid, one)
            out = self._collect(sent)
            self._started.difference_update(end)
            return out

    def _collect(self, sent: dict) -> dict:
        out, errors = {}, []
        for _ in range(len(sent)):
            try:
                result, error = self._results.get(timeout=self.timeout)
            except queue.Empty:
                raise RemoteError(f"grpc://{self.address}/{self.name}: no answer in {self.timeout:g} s") from None
            if error is not None:
                errors.append(str(error.message() if hasattr(error, "message") else error))
                continue
            sid, one = sent[result.get_response().id]
            y = result.as_numpy(self.y_name)[0]
            out[sid] = y[-1] if one else y
        missing = [sid for sid, _ in sent.values() if sid not in out]
        for msg in errors:  # an error answer names no request: the model's messages name the sequence
            m = _SEQ.search(msg)
            sid = next((s for s in missing if m and int(m.group(1)) == s), missing[0] if missing else None)
            if sid is not None:
                out[sid] = RemoteError(msg)
                missing.remove(sid)
        return out

    def close(self) -> None:
        try:
            self.client.stop_stream()
        finally:
            self.client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RemoteStream:
    """One sequence on the server, used like a local Stream (step, feed, steps) by the Driver."""

    def __init__(self, remote: Remote, sequence_id: int):
        self.remote, self.sequence_id, self.steps = remote, int(sequence_id), 0
        self._open = False

    def feed(self, frames) -> np.ndarray:
        return self._send(frames)

    def step(self, frame) -> np.ndarray:
        return self._send(frame)

    def _send(self, frames, end: bool = False):
        y = self.remote.step({self.sequence_id: frames}, end={self.sequence_id} if end else ())[self.sequence_id]
        self._open = not end
        if isinstance(y, Exception):
            raise y
        self.steps += len(y) if np.ndim(y) == 2 else 1
        return y

    def close(self) -> None:
        """END the sequence (on one zero frame, whose output is dropped) so the server frees it now."""
        if self._open:
            self._open = False
            try:
                self.remote.step({self.sequence_id: np.zeros(self.remote.frame_shape, self.remote.dtype)},
                                 end={self.sequence_id})
            except RemoteError:
                pass


def _first_line(e) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
