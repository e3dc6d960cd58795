"""What a stateful ONNX model expects: its frame input, its output, its state pairs, its constants.

Read from edgernn metadata when the file has it, else from the graph and the names the user
gives (`states={"in": "out"}`), else from the obvious pairings (h0/hn, state/stateN, …).
Torch-free.

The frame input's axes are its layout, one letter each: b (batch), t (time), f (one frame's
values). edgernn files are `btf` (tokens `bt`, one step per call `bf`); other exporters write
time-major `tbf`, batchless `tf` (Silero's `[seq_len, 576]`) or token `[batch, sequence]` inputs.
The runtime talks in `(N, T, *frame)` and converts at the call (Signature.call_x / canon_y), so
time is never taken for features or batch. A symbolic frame size (Silero's raw-sample
`[batch, sequence]`) stays open until the caller gives it (`frame=N`, `--window`, or the length
of the first frame).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from edgernn.core import dtypes
from edgernn.core import meta as meta_mod
from edgernn.core.errors import InputError, ModelFileError
from edgernn.core.wording import plural

_DTYPES = dtypes.numpy_by_ort("float32", "int64", "float64", "int32", "float16")  # what a frame or state may be
LAYOUTS = {3: ("btf", "tbf"), 2: ("bf", "tf", "bt", "tb")}
_TIME_NAMES = {"t", "time", "times", "seq", "sequence", "seq_len", "seqlen", "sequence_length", "length", "steps",
               "time_steps", "timesteps", "frames", "num_frames", "n_frames", "chunks"}
_BATCH_NAMES = {"batch", "n", "batch_size", "b", "bs", "batches", "num_streams", "streams"}
# (input pattern, output template) tried in order when the user names no pairs.
_PAIRINGS = [(r"^(.*)0$", r"{}n"), (r"^(.*)_in$", r"{}_out"), (r"^(.*)$", r"{}n"), (r"^(.*)$", r"{}N"),
             (r"^(.*)$", r"{}_out"), (r"^(.*)$", r"{}_n"), (r"^(.*)$", r"{}_new"), (r"^(.*)$", r"next_{}"),
             (r"^in_(.*)$", r"out_{}"), (r"^(.*)_in$", r"{}")]


@dataclass(frozen=True)
class StatePair:
    input: str
    output: str
    shape: tuple  # with None at batch_axis
    batch_axis: int
    dtype: type = np.float32

    def zeros(self, batch: int) -> np.ndarray:
        if self.batch_axis < 0:  # a fixed-shape state: the model serves one stream per call
            if batch != 1:
                raise InputError(f"state {self.input!r} has the fixed shape {list(self.shape)} (no batch axis); "
                                 "expected one stream per call")
            return np.zeros(self.shape, dtype=self.dtype)
        shape = list(self.shape)
        shape[self.batch_axis] = batch
        return np.zeros(shape, dtype=self.dtype)


@dataclass(frozen=True)
class Signature:
    x: str  # the frame input
    dtype: type  # its numpy dtype
    frame_shape: tuple  # one frame: (features,) or () for a token
    has_time: bool  # True: x is (N, T, ...); False: x is (N, ...), one step per call
    y: str
    states: tuple  # StatePair, ...
    constants: dict  # input name -> np.ndarray fed on every call
    pairing: str  # "metadata" | "given" | "guessed"
    layout: str = "btf"  # the axes of x in the file: b batch, t time, f the frame's values
    frame_symbol: str | None = None  # the name of a frame size still open (frame_shape holds None)

    @property
    def outputs(self) -> list[str]:
        return [self.y] + [s.output for s in self.states]

    @property
    def frame_open(self) -> bool:
        return any(d is None for d in self.frame_shape)

    @property
    def step_shape(self) -> tuple:
        """x of one step of one stream, in the file's layout."""
        return tuple(1 if a in "bt" else self.frame_shape[0] for a in self.layout) if "f" in self.layout else \
            tuple(1 for _ in self.layout)

    def call_x(self, x: np.ndarray) -> np.ndarray:
        """(N, T, *frame), or (N, *frame) without time, -> the file's layout."""
        if self.layout[0] == "t":
            if "b" not in self.layout:
                if x.shape[0] != 1:
                    raise InputError(f"{plural(x.shape[0], 'stream')} in one call; this model's input {self.x!r} has no batch "
                                     "axis: expected one stream per call")
                return x[0]
            return x.swapaxes(0, 1)
        return x

    def canon_y(self, y: np.ndarray) -> np.ndarray:
        """The file's y -> (N, T, outputs), or (N, outputs) without time."""
        if self.layout[0] == "t":
            if "b" not in self.layout:
                y = y[None]
                return y[..., None] if y.ndim == 2 else y
            return y.swapaxes(0, 1) if y.ndim >= 2 else y
        return y

    def with_frame(self, size: int) -> "Signature":
        import dataclasses

        return dataclasses.replace(self, frame_shape=(int(size),), frame_symbol=None)


def _constant(arg, value, source: str) -> np.ndarray:
    """A constant input in the graph's dtype and, where the graph fixes it, its shape."""
    dtype = _DTYPES.get(arg.type, np.float32)
    try:
        raw = np.asarray(value)
        if raw.dtype.kind not in "biuf":
            raise TypeError(f"{raw.dtype.kind}")
        v = raw.astype(dtype)
        if np.issubdtype(dtype, np.integer) and not np.array_equal(v, raw):
            raise ValueError("not a whole number in range")
    except (TypeError, ValueError, OverflowError) as e:
        raise InputError(f"constant {arg.name!r} = {str(value)[:40]!r}; expected numbers for its "
                         f"{np.dtype(dtype).name} input ({e})") from None
    dims = _dims(arg)
    if all(isinstance(d, int) for d in dims):
        if v.size != int(np.prod(dims, dtype=np.int64)):
            raise InputError(f"constant {arg.name!r} has {plural(v.size, 'value')}; {source} expects shape {dims}")
        v = v.reshape(dims)
    return v


def _dims(arg) -> list:
    return [d if isinstance(d, int) and d >= 0 else (d if isinstance(d, str) else None) for d in arg.shape]


def _batch_axis(dims: list, name: str, source: str) -> int:
    named = [i for i, d in enumerate(dims) if isinstance(d, str) and d.lower() in ("batch", "n", "batch_size", "b")]
    if named:
        return named[0]
    symbolic = [i for i, d in enumerate(dims) if not isinstance(d, int)]
    if len(symbolic) == 1:
        return symbolic[0]
    if not symbolic:
        return -1  # fixed shape: no batch axis; the model serves one stream per call
    raise ModelFileError(f"{source}: state {name!r} has shape {dims} with several unknown dims; "
                         "expected only the batch dim symbolic: re-export with fixed state sizes")


def _state_pair(inp, out_name: str, source: str, shape_hint=None) -> StatePair:
    dims = _dims(inp)
    if shape_hint is None:
        axis = _batch_axis(dims, inp.name, source)
    else:  # the metadata's shape: it must agree with the graph wherever the graph fixes a dim
        hint, axis = shape_hint
        if len(hint) != len(dims) or not 0 <= axis < len(hint):
            raise ModelFileError(f"{source}: metadata gives state {inp.name!r} shape {hint} with batch axis {axis}; "
                                 f"the graph's is {dims}: the metadata contradicts the graph, re-export it")
        for i, (h, g) in enumerate(zip(hint, dims)):
            if i != axis and (h is None or h < 1 or (isinstance(g, int) and g != h)):
                raise ModelFileError(f"{source}: metadata gives state {inp.name!r} shape {hint}; the graph's is "
                                     f"{dims}: the metadata contradicts the graph, re-export it")
        dims = [None if i == axis else h for i, h in enumerate(hint)]
    shape = tuple(None if i == axis else d for i, d in enumerate(dims))
    if any(d is None for i, d in enumerate(shape) if i != axis):
        raise ModelFileError(f"{source}: state {inp.name!r} has shape {dims}: a dim other than batch is unknown; "
                             "expected fixed sizes except batch")
    if axis < 0:
        axis, shape = None, tuple(dims)
    return StatePair(inp.name, out_name, shape, axis if axis is not None else -1,
                     _DTYPES.get(inp.type, np.float32))


def _guess_pairs(inputs: dict, outputs: list[str], taken: set) -> dict:
    pairs = {}
    for name in inputs:
        if name in taken:
            continue
        for pat, tmpl in _PAIRINGS:
            m = re.match(pat, name)
            cand = tmpl.format(m.group(1)) if m else None
            if cand and cand in outputs and cand != name and cand not in pairs.values():
                pairs[name] = cand
                break
    return pairs


def from_session(sess, *, source: str = "model", states: dict | None = None, constants: dict | None = None,
                 require_constants: bool = True, layout: str | None = None,
                 frame: int | None = None) -> tuple[Signature, dict | None]:
    """Resolve the signature of an onnxruntime session; returns it and the parsed metadata (or None)."""
    inputs = {i.name: i for i in sess.get_inputs()}
    outputs = [o.name for o in sess.get_outputs()]
    text = sess.get_modelmeta().custom_metadata_map.get(meta_mod.KEY)
    meta = meta_mod.parse(text, source=source) if text is not None else None
    constants = dict(constants or {})
    for k in constants:
        if k not in inputs:
            raise InputError(f"constant {k!r} is not an input of {source}; its inputs are {list(inputs)}")
        constants[k] = _constant(inputs[k], constants[k], source)
    if meta is not None and not states:
        pairs, pairing = {s["input"]: s["output"] for s in meta["states"]}, "metadata"
        hints = {s["input"]: ([d if isinstance(d, int) and not isinstance(d, bool) else None for d in s["shape"]],
                              s["batch_axis"]) for s in meta["states"]}
    elif states:
        pairs, pairing, hints = dict(states), "given", {}
    else:
        pairs, pairing, hints = _guess_pairs(inputs, outputs, set(constants)), "guessed", {}
    if len(set(pairs.values())) != len(pairs):
        raise ModelFileError(f"{source}: state pairs {pairs} send two states into one output; expected one output each")
    for i, o in pairs.items():
        if i not in inputs or o not in outputs:
            raise ModelFileError(f"{source}: state pair {i}->{o} is not in the graph (inputs {list(inputs)}, "
                                 f"outputs {outputs}); expected names from its inputs and outputs")
    pairs_ = tuple(_state_pair(inputs[i], o, source, hints.get(i)) for i, o in pairs.items())
    free_in = [n for n in inputs if n not in pairs and n not in constants]
    free_out = [n for n in outputs if n not in pairs.values()]
    framelike = [n for n in free_in if len(inputs[n].shape) >= 2]  # scalars and vectors are settings
    x_name = meta["input"]["name"] if meta else (framelike[0] if len(framelike) == 1 else None)
    y_name = meta["output"]["name"] if meta else (free_out[0] if free_out else None)
    if x_name is None or x_name not in inputs:
        raise ModelFileError(f"{source}: cannot tell the frame input among {free_in or list(inputs)}; expected exactly one "
                             "input that is neither a state (--state IN=OUT) nor a constant (--const NAME=VALUE)")
    if y_name in pairs.values():
        raise ModelFileError(f"{source}: the output {y_name!r} is named both y and a state output; expected y to be "
                             "an output that is not a state")
    if y_name is None or y_name not in outputs:
        raise ModelFileError(f"{source}: no output left for y (outputs {outputs}, all paired as states); "
                             "expected at least one output that is not a state")
    extra = [n for n in free_in if n != x_name]
    if extra and require_constants:
        raise ModelFileError(f"{source}: inputs {extra} are neither the frame, a state nor a constant; "
                             "pass them with --const NAME=VALUE or pair them with --state IN=OUT")
    return _frame(inputs[x_name], meta, source, y_name, pairs_, constants, pairing, layout, frame), meta


def _name(d) -> str:
    return d.lower() if isinstance(d, str) else ""


def guess_layout(dims: list, dtype) -> str:
    """The layout of a frame input from its dims and dtype (no metadata, none given)."""
    if len(dims) == 3:
        first, second = _name(dims[0]), _name(dims[1])
        return "tbf" if first in _TIME_NAMES or (second in _BATCH_NAMES and first not in _BATCH_NAMES) else "btf"
    if len(dims) == 2:
        first = _name(dims[0])
        if np.issubdtype(dtype, np.integer) and not isinstance(dims[1], int):  # token ids, a symbolic length
            return "tb" if first in _TIME_NAMES else "bt"
        return "tf" if first in _TIME_NAMES else "bf"
    return ""


def _frame(x, meta, source, y_name, pairs, constants, pairing, layout=None, frame=None) -> Signature:
    dims = _dims(x)
    dtype = _DTYPES.get(x.type)
    if dtype is None:
        raise ModelFileError(f"{source}: input {x.name!r} has type {x.type}; expected float or int64 frames")
    given = layout is not None
    if layout is None:
        token = meta is not None and meta["input"]["dtype"] == "int64"
        if meta is not None:
            layout = "bt" if token or (len(dims) == 2 and dtype == np.int64) else "btf" if len(dims) == 3 else "bf"
        else:
            layout = guess_layout(dims, dtype)
    if len(dims) not in LAYOUTS:
        raise ModelFileError(f"{source}: input {x.name!r} has rank {len(dims)} ({dims}); expected rank 3 "
                             "[batch, time, features] or rank 2 [batch, features]")
    if layout not in LAYOUTS[len(dims)] and not given:
        raise ModelFileError(f"{source}: metadata says input {x.name!r} is {meta['input']['dtype']} "
                             f"{'tokens' if layout == 'bt' else 'frames'} but the graph's is {x.type} of shape {dims}; "
                             "the metadata contradicts the graph: re-export it")
    if layout not in LAYOUTS[len(dims)]:
        raise InputError(f"layout {layout!r} for input {x.name!r} of rank {len(dims)} ({dims}); expected one of "
                         f"{', '.join(LAYOUTS[len(dims)])}")
    has_time = "t" in layout
    frame_shape, symbol = (), None
    if "f" in layout:
        d = dims[layout.index("f")]
        if not isinstance(d, int):
            feats = meta and meta["input"].get("features")
            if isinstance(feats, int):
                d = feats
            elif frame is not None:
                d = int(frame)
            else:
                d, symbol = None, d if isinstance(d, str) else "?"
        elif frame is not None and int(frame) != d:
            raise InputError(f"frame={frame}; the input {x.name!r} of {source} takes frames of {plural(d, 'value')}")
        frame_shape = (d,)
    elif frame is not None:
        raise InputError(f"frame={frame}; the input {x.name!r} of {source} takes one token per step, not frames")
    if "b" not in layout and any(s.batch_axis >= 0 for s in pairs):
        raise ModelFileError(f"{source}: input {x.name!r} ({dims}) has no batch axis but its states do; "
                             "expected a layout with b (layout=btf, tbf, bf or bt)")
    if meta is not None and meta["input"].get("features") not in (None, frame_shape[0] if frame_shape else None):
        raise ModelFileError(f"{source}: metadata says {plural(meta['input']['features'], 'feature')} but the graph takes "
                             f"{frame_shape[0] if frame_shape else 'tokens'}; the metadata contradicts the graph: re-export it")
    return Signature(x.name, dtype, frame_shape, has_time, y_name, pairs, constants, pairing, layout, symbol)
