"""A Triton Inference Server model repository for one edgernn model: scale-out streaming.

    write_repository("kws.onnx", "repo")    # repo/kws/config.pbtxt + repo/kws/1/model.onnx

Triton's sequence batcher keeps each stream's state on the server (implicit state): a client
sends only its frames with a sequence id, start and end flags, and Triton feeds the previous
request's `hn` back as the next request's `h0`, batching the requests of many sequences into
one model call. Two things about that contract shape the file we serve:

- Triton stacks the state of a batch on the FIRST axis, as it does for every tensor when
  max_batch_size > 0; our states are [layers*dirs, batch, hidden] (batch axis 1). So the served
  graph is the exported one wrapped with Transposes: states go in and out as [batch, L*D, H].
- Triton feeds the control tensors START/END/READY/CORRID to the model as inputs, so the served
  graph takes them: START zeroes a slot's state (a new sequence never sees a stale one, even if
  the initial-state setting were lost), READY = 0 keeps a slot's state unchanged (the "direct"
  strategy runs empty slots); END and CORRID are accepted and unused.

With several states Triton was reported to feed the wrong state when the output names sort
differently from the input names (triton-inference-server/server #8586); our pairs (c0/cn,
h0/hn) sort alike, and a file whose pairs would not is refused.

Torch-free; needs the `onnx` package (imported inside, with an error naming the fix).
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgernn.core import dtypes
from edgernn.core import meta as meta_mod
from edgernn.core.errors import InputError, ModelFileError
from edgernn.export.onnxmeta import meta_text, set_meta

CONTROLS = ("START", "END", "READY", "CORRID")
KINDS = {"cpu": "KIND_CPU", "gpu": "KIND_GPU"}
BACKENDS = ("onnxruntime", "python")  # the graph wrapped for Triton's implicit state, or edgernn's streams
# Most sequences in one model call, by default. Python: Triton 2.51's "oldest" batcher (nvidia-pytriton
# 0.7.0) segfaults in TRITONBACKEND_RequestRelease with batches of 32 or 64 under 64 concurrent
# sequences, even for a model that returns zeros; 16 held (docs/serving.md).
MAX_BATCH = {"onnxruntime": 64, "python": 16}
# the element types a served tensor may have: onnx TensorProto.DataType number -> Triton data type
_TRITON_TYPES = {dtypes.BY_NAME[n].code: dtypes.BY_NAME[n].triton for n in ("float32", "float16", "float64",
                                                                            "int32", "int64")}
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Tensor:
    """One tensor as Triton sees it: dims without the batch axis (-1 = variable)."""
    name: str
    dtype: str  # TYPE_FP32, ...
    dims: tuple


@dataclass(frozen=True)
class Served:
    x: Tensor
    y: Tensor
    states: tuple  # ((input Tensor, output name), ...) in metadata order


def _onnx():
    try:
        import onnx
    except ImportError as e:
        raise InputError("--triton needs the onnx package: pip install onnx") from e
    return onnx


def load(onnx_path):
    """(ModelProto, parsed edgernn metadata) of an exported file; refuses what cannot stream."""
    onnx = _onnx()
    path = Path(onnx_path)
    if not path.is_file():
        raise InputError(f"{path}: no such model file; expected an .onnx file written by `edgernn export`")
    try:
        proto = onnx.load(str(path))
    except Exception as e:  # onnx raises DecodeError and friends for a file that is not a model
        raise ModelFileError(f"{path}: not a readable ONNX model ({type(e).__name__}); expected a file "
                             "written by `edgernn export`") from e
    text = meta_text(proto)
    if text is None:
        raise ModelFileError(f"{path}: no '{meta_mod.KEY}' metadata; the Triton repository is written from a "
                             "file made by `edgernn export`")
    meta = meta_mod.parse(text, source=str(path))
    _check_streamable(meta, str(path))
    return proto, meta


def _check_streamable(meta: dict, source: str) -> None:
    if meta["model"].get("bidirectional"):
        raise InputError(f"{source}: the model is bidirectional: it reads the future, so it cannot carry state "
                         "from one request to the next; serve a unidirectional model on Triton")
    pairs = [(s["input"], s["output"]) for s in meta["states"]]
    if not pairs:
        raise ModelFileError(f"{source}: the metadata names no state pairs; expected h0->hn (and c0->cn)")
    by_in = [o for _, o in sorted(pairs)]
    if by_in != sorted(o for _, o in pairs):
        raise ModelFileError(f"{source}: state pairs {pairs} sort differently by input and by output name; "
                             "Triton can then feed the wrong state (server #8586): name them like h0/hn, c0/cn")


def _dims(value_info) -> list:
    return [d.dim_value if d.HasField("dim_value") else -1 for d in value_info.type.tensor_type.shape.dim]


def _elem(value_info) -> int:
    return value_info.type.tensor_type.elem_type


def _triton_type(value_info, source: str) -> str:
    t = _TRITON_TYPES.get(_elem(value_info))
    if t is None:
        raise ModelFileError(f"{source}: tensor {value_info.name!r} has ONNX type {_elem(value_info)}; "
                             f"expected one of float32, float16, float64, int32, int64")
    return t


def served(proto, meta: dict, source: str = "model") -> Served:
    """What the served (wrapped) model looks like to Triton, read from the exported graph."""
    ins = {i.name: i for i in proto.graph.input}
    outs = {o.name: o for o in proto.graph.output}
    xi, yo = ins[meta["input"]["name"]], outs[meta["output"]["name"]]
    x = Tensor(xi.name, _triton_type(xi, source), tuple(_dims(xi)[1:]))  # [-1, F] or [-1] for tokens
    y = Tensor(yo.name, _triton_type(yo, source), tuple(_dims(yo)[1:]))
    states = []
    for s in meta["states"]:
        vi = ins[s["input"]]
        dims = tuple(d for i, d in enumerate(_dims(vi)) if i != s["batch_axis"])
        if len(dims) != 2 or any(d < 0 for d in dims):
            raise ModelFileError(f"{source}: state {s['input']!r} has shape {_dims(vi)}; expected "
                                 "[layers*directions, batch, hidden] with fixed sizes except batch")
        states.append((Tensor(s["input"], _triton_type(vi, source), dims), s["output"]))
    return Served(x, y, tuple(states))


def _perms(rank: int, axis: int) -> tuple[list, list]:
    """(batch-first -> exported layout, exported layout -> batch-first) Transpose permutations."""
    to_bf = [axis] + [k for k in range(rank) if k != axis]
    return [to_bf.index(j) for j in range(rank)], to_bf


def wrap(proto, meta: dict):
    """The exported graph with batch-first states and Triton's control inputs (see the module doc)."""
    onnx = _onnx()
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    m = copy.deepcopy(proto)
    g = m.graph
    pairs = {s["input"]: s for s in meta["states"]}
    outs = {s["output"] for s in meta["states"]}
    state_in = {i.name: i for i in g.input if i.name in pairs}
    keep_in = [i for i in g.input if i.name not in pairs]
    keep_out = [o for o in g.output if o.name not in outs]
    _rename(g, {**{n: f"{n}__inner" for n in pairs}, **{n: f"{n}__inner" for n in outs}})
    pre, post, inits = [], [], []
    inits.append(numpy_helper.from_array(np.array([-1, 1, 1], np.int64), "__ctl_shape"))  # [B, 1] -> [B, 1, 1]
    inits.append(numpy_helper.from_array(np.array(0.5, np.float32), "__half"))
    for c in ("START", "READY"):
        pre.append(helper.make_node("Reshape", [c, "__ctl_shape"], [f"__{c}_r"]))
        pre.append(helper.make_node("Greater", [f"__{c}_r", "__half"], [f"__{c}_b"]))
    new_in, new_out = [], []
    for name, s in pairs.items():
        vi, axis, out = state_in[name], s["batch_axis"], s["output"]
        dims = [d for i, d in enumerate(_dims(vi)) if i != axis]
        elem = _elem(vi)
        zero = f"__zero_{name}"
        inits.append(numpy_helper.from_array(np.zeros((), dtypes.BY_CODE[elem].numpy), zero))
        to_inner, to_bf = _perms(len(dims) + 1, axis)
        pre.append(helper.make_node("Where", ["__START_b", zero, name], [f"{name}__reset"]))
        pre.append(helper.make_node("Transpose", [f"{name}__reset"], [f"{name}__inner"], perm=to_inner))
        post.append(helper.make_node("Transpose", [f"{out}__inner"], [f"{out}__bf"], perm=to_bf))
        post.append(helper.make_node("Where", ["__READY_b", f"{out}__bf", f"{name}__reset"], [out]))
        new_in.append(helper.make_tensor_value_info(name, elem, ["batch", *dims]))
        new_out.append(helper.make_tensor_value_info(out, elem, ["batch", *dims]))
    controls = [helper.make_tensor_value_info(c, TensorProto.FLOAT, ["batch", 1]) for c in CONTROLS[:3]]
    controls.append(helper.make_tensor_value_info("CORRID", TensorProto.UINT64, ["batch", 1]))
    nodes = pre + list(g.node) + post
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(inits)
    del g.input[:]
    g.input.extend(keep_in + new_in + controls)
    del g.output[:]
    g.output.extend(keep_out + new_out)
    set_meta(m, _served_meta(meta))
    onnx.checker.check_model(m, full_check=True)
    return m


def _rename(graph, names: dict) -> None:
    """Rename tensors in the nodes of `graph` (and of any subgraph that sees them)."""
    for node in graph.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        node.output[:] = [names.get(n, n) for n in node.output]
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                _rename(sub, names)


def _served_meta(meta: dict) -> dict:
    out = copy.deepcopy(meta)
    for s in out["states"]:
        shape = [d for i, d in enumerate(s["shape"]) if i != s["batch_axis"]]
        s["shape"], s["batch_axis"] = ["batch", *shape], 0
    out["serving"] = {"triton": {"controls": list(CONTROLS), "state_layout": "batch-first",
                                 "note": "START zeroes a slot's state; READY=0 keeps it"}}
    return out


def _check_options(name, max_batch_size, idle_timeout_s, instances, kind, max_sequences, queue_delay_us) -> None:
    if not _NAME.match(name):
        raise InputError(f"Triton model name {name!r}; expected letters, digits, '_', '.' or '-' (it is a folder name)")
    if int(max_batch_size) < 1:
        raise InputError(f"max_batch_size={max_batch_size}; expected >= 1 (the sequence batcher needs a batch axis)")
    if not idle_timeout_s > 0:
        raise InputError(f"idle_timeout_s={idle_timeout_s}; expected a positive number of seconds")
    if int(instances) < 1:
        raise InputError(f"instances={instances}; expected >= 1")
    if kind not in KINDS:
        raise InputError(f"kind={kind!r}; expected one of {', '.join(KINDS)}")
    if max_sequences is not None and int(max_sequences) < 1:
        raise InputError(f"max_sequences={max_sequences}; expected >= 1")
    if int(queue_delay_us) < 0:
        raise InputError(f"queue_delay_us={queue_delay_us}; expected >= 0")


def _dims_text(dims) -> str:
    return "[ " + ", ".join(str(d) for d in dims) + " ]"


def _tensor_block(t: Tensor) -> str:
    return f'  {{\n    name: "{t.name}"\n    data_type: {t.dtype}\n    dims: {_dims_text(t.dims)}\n  }}'


def _state_block(t: Tensor, output: str) -> str:
    return (f'    {{\n      input_name: "{t.name}"\n      output_name: "{output}"\n'
            f"      data_type: {t.dtype}\n      dims: {_dims_text(t.dims)}\n"
            f"      initial_state: {{\n        data_type: {t.dtype}\n        dims: {_dims_text(t.dims)}\n"
            f'        zero_data: true\n        name: "{t.name}_zero"\n      }}\n    }}')


def _control_block(name: str) -> str:
    kind = {"START": "CONTROL_SEQUENCE_START", "END": "CONTROL_SEQUENCE_END", "READY": "CONTROL_SEQUENCE_READY",
            "CORRID": "CONTROL_SEQUENCE_CORRID"}[name]
    value = "data_type: TYPE_UINT64" if name == "CORRID" else "fp32_false_true: [ 0, 1 ]"
    return f'    {{\n      name: "{name}"\n      control [ {{ kind: {kind} {value} }} ]\n    }}'


def render(s: Served, *, name: str, max_batch_size: int = 64, idle_timeout_s: float = 60, instances: int = 1,
           kind: str = "cpu", max_sequences: int | None = None, queue_delay_us: int = 500) -> str:
    """config.pbtxt text for the served model `s` (options as in write_repository)."""
    _check_options(name, max_batch_size, idle_timeout_s, instances, kind, max_sequences, queue_delay_us)
    candidates = int(max_sequences or 16 * int(max_batch_size))
    states = ",\n".join(_state_block(t, o) for t, o in s.states)
    controls = ",\n".join(_control_block(c) for c in CONTROLS)
    return f"""# Triton model configuration written by edgernn: a stateful RNN served with the sequence batcher.
# Clients send frames x [1, T, F] (T = 1 per streaming step, or a chunk) with a sequence id and
# start/end flags; Triton keeps each sequence's state and feeds it back (implicit state).
name: "{name}"
backend: "onnxruntime"
# Requests of different sequences are batched on the first axis, states included.
max_batch_size: {int(max_batch_size)}
input [
{_tensor_block(s.x)}
]
output [
{_tensor_block(s.y)}
]
# The state outputs are not listed above: Triton carries them; list one to read it for debugging.
# (dynamic_batching cannot be combined with sequence_batching: the "oldest" strategy below is the
# dynamic batcher for sequences.)
sequence_batching {{
  # A stream that sends nothing for this long is dropped and its slot freed; Triton's default
  # (1 s) ends a live stream that merely pauses, so the default here is much longer.
  max_sequence_idle_microseconds: {round(idle_timeout_s * 1e6)}
  # "oldest": each model call takes the oldest pending request of up to max_candidate_sequences
  # live sequences (never two of one sequence), so many streams share one batched call; the
  # delay bounds the latency spent waiting for a fuller batch. Sequences beyond the candidates
  # wait in a backlog until one ends (END) or idles out.
  oldest {{
    max_candidate_sequences: {candidates}
    preferred_batch_size: [ {int(max_batch_size)} ]
    max_queue_delay_microseconds: {int(queue_delay_us)}
  }}
  # The served graph reads START (zeroes the slot's state) and READY (0 keeps it); END and
  # CORRID are inputs it accepts and ignores.
  control_input [
{controls}
  ]
  # Each pair: Triton feeds the previous request's output_name back as input_name, starting
  # from zeros. Shapes exclude the batch axis (the served graph holds states batch-first).
  state [
{states}
  ]
}}
instance_group [
  {{
    count: {int(instances)}
    kind: {KINDS[kind]}
  }}
]
"""


def config_text(onnx_path, *, name: str | None = None, backend: str = "onnxruntime", **options) -> str:
    """config.pbtxt for serving `onnx_path` (see write_repository for the options)."""
    proto, meta = load(onnx_path)
    return _config(proto, meta, str(onnx_path), name=name or _default_name(onnx_path), backend=backend, **options)


def _config(proto, meta: dict, source: str, *, name: str, backend: str, **options) -> str:
    s = served(proto, meta, source)
    if backend not in BACKENDS:
        raise InputError(f"Triton backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if options.get("max_batch_size") is None:
        options["max_batch_size"] = MAX_BATCH[backend]
    if backend == "onnxruntime":
        return render(s, name=name, **options)
    from edgernn.serve import triton_python

    o = {**dict(idle_timeout_s=60, instances=1, kind="cpu", max_sequences=None, queue_delay_us=500), **options}
    _check_options(name, **o)
    controls = ",\n".join(_control_block(c) for c in CONTROLS)
    return triton_python.render(meta, name=name, x_block=_tensor_block(s.x), y_block=_tensor_block(s.y),
                                controls=controls, **o)


def _default_name(onnx_path) -> str:
    stem = Path(onnx_path).name.removesuffix(".onnx")
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem) or "model"


def write_repository(onnx_path, repo_dir, *, name: str | None = None, max_batch_size: int | None = None,
                     idle_timeout_s: float = 60, instances: int = 1, kind: str = "cpu", version: int = 1,
                     max_sequences: int | None = None, queue_delay_us: int = 500,
                     backend: str = "onnxruntime") -> Path:
    """Write REPO/NAME/config.pbtxt and REPO/NAME/VERSION/model.onnx; returns REPO/NAME.

    backend "onnxruntime": the graph wrapped for Triton's implicit state (above); "python": the
    exported file as is, with VERSION/model.py running edgernn's streams (edgernn.serve.triton_python).
    Other versions already in REPO/NAME are kept; this version and the config are replaced by
    renames, so a Triton polling the repository never loads half a model."""
    name = name or _default_name(onnx_path)
    options = dict(max_batch_size=max_batch_size, idle_timeout_s=idle_timeout_s, instances=instances, kind=kind,
                   max_sequences=max_sequences, queue_delay_us=queue_delay_us)
    if int(version) < 1:
        raise InputError(f"version={version}; expected a positive integer (Triton's version folder)")
    proto, meta = load(onnx_path)
    text = _config(proto, meta, str(onnx_path), name=name, backend=backend, **options)
    if backend == "python":
        from edgernn.serve.triton_python import MODEL_PY

        model, extra = Path(onnx_path).read_bytes(), {"model.py": MODEL_PY}
    else:
        model, extra = wrap(proto, meta).SerializeToString(), {}
    repo = Path(repo_dir)
    repo.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=repo, prefix=f".{name}."))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700: a server running as another user must read it
    try:
        (tmp / str(int(version))).mkdir()
        (tmp / str(int(version)) / "model.onnx").write_bytes(model)
        for fname, content in extra.items():
            (tmp / str(int(version)) / fname).write_text(content)
        (tmp / "config.pbtxt").write_text(text)
        _install(tmp, repo / name, str(int(version)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return repo / name


def _install(tmp: Path, dest: Path, version: str) -> None:
    """Move the model folder written in `tmp` into place at `dest`."""
    if not dest.exists():
        os.rename(tmp, dest)
        return
    if (dest / version).exists():
        os.rename(dest / version, tmp / f"{version}.old")  # removed with tmp
    os.rename(tmp / version, dest / version)
    os.replace(tmp / "config.pbtxt", dest / "config.pbtxt")
