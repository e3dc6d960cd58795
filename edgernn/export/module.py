"""Any PyTorch module with recurrent layers as ONE streaming ONNX file, verified against it.

    from edgernn.export import export_module
    r = export_module(MyModel(), "my.onnx")   # x [batch, time, features] -> y [batch, time, ...]
    r.max_error, r.meta["states"]             # 2.4e-07, [{"input": "encoder.rnn.h0", ...}, ...]

Every nn.RNN/LSTM/GRU and causal Conv1d gets its state as a graph input/output pair named after
its path (edgernn.export.streamify); per-frame layers pass as they are. A layer that mixes time
with no streaming form is refused by name (edgernn.export.refuse), unless `offline=True`, which
writes the file for whole-sequence use and records why in its metadata. The graph is traced by
torch.onnx's TorchScript exporter (dynamo=False: the dynamo exporter specialises an RNN's length)
with batch and time dynamic, then checked by edgernn.export.module_parity. A bidirectional
model made of one RNN and a Linear head goes through edgernn's own graph writer and gets its
lookahead companion.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import onnx
import torch
from torch import nn

from edgernn.core import fileio
from edgernn.core import meta as meta_mod
from edgernn.core.errors import InputError, ModelFileError
from edgernn.export import companion, graph, module_parity, parity, refuse
from edgernn.export.exported import Exported
from edgernn.export.module_parity import Input
from edgernn.export.onnxmeta import DEFAULT_OPSET, IR_VERSION, set_meta
from edgernn.export.streamify import Refusal, Streaming, find_slots, first_tensor

EXPORTER = "torch.onnx-torchscript+edgernn-streamify/1"


@dataclass
class Plan:
    """What export_module found: the streaming form, its input, and how y comes out."""

    stream: Streaming
    inp: Input
    readout: str  # "every": y (N, T, ...); "last": y (N, ...)
    size: int
    layout: str  # "btf" | "tbf": the module's own input layout (the file always takes btf)
    offline: list  # (path, reason) why the file cannot stream; [] when it can


@contextlib.contextmanager
def eval_mode(module: nn.Module):
    """The module in eval mode (as torch.onnx exports) on one torch thread, its own modes and the
    thread count restored afterwards. One thread: the checks run small batches step by step, where
    more threads only contend (a 2-layer GRU of 256 ran 80x slower on 2 threads of a busy 2-core box)."""
    modes = [(m, m.training) for m in module.modules()]
    threads = torch.get_num_threads()
    module.eval()
    torch.set_num_threads(1)
    try:
        yield module
    finally:
        torch.set_num_threads(threads)
        for m, mode in modes:
            m.train(mode)


def guess_input(module: nn.Module, *, features=None, vocab=None, example=None) -> Input:
    """x's kind and size: given, from an example tensor, or read from the first layer that takes it."""
    if vocab:
        return Input(vocab=int(vocab))
    if features:
        return Input(features=int(features))
    hint = getattr(module, "edgernn_input", None)  # a module that knows (edgernn.export.pt2)
    if hint:
        return Input(**hint)
    if example is not None:
        if not torch.is_floating_point(example):
            emb = next((m for m in module.modules() if isinstance(m, nn.Embedding)), None)
            if emb is None:
                raise InputError("an integer example but no nn.Embedding to read the vocabulary from; pass vocab=")
            return Input(vocab=emb.num_embeddings)
        return Input(features=int(example.shape[-1]))
    for m in module.modules():
        if isinstance(m, nn.Embedding):
            return Input(vocab=m.num_embeddings)
        size = {nn.Linear: "in_features", nn.RNNBase: "input_size", nn.RNNCellBase: "input_size",
                nn.Conv1d: "in_channels"}
        for cls, attr in size.items():
            if isinstance(m, cls):
                return Input(features=getattr(m, attr))
        if isinstance(m, nn.LayerNorm):
            return Input(features=m.normalized_shape[-1])
    raise InputError(f"cannot tell how many features {type(module).__name__} takes (no Linear, RNN, Conv1d, "
                     "LayerNorm or Embedding to read it from); pass features=N (--features N) or vocab=N")


def _batches_seen(module, slots, x) -> list[int]:
    """The batch size each stateful layer sees when the module runs on x."""
    seen = []

    def hook(m, args):
        u = args[0]
        if not torch.is_tensor(u):  # a PackedSequence, say: the streaming form refuses it by name
            return
        seen.append(u.shape[0] if isinstance(m, nn.Conv1d) or m.batch_first else u.shape[1])

    handles = [s.module.register_forward_pre_hook(hook) for s in slots]
    try:
        with torch.no_grad():
            module(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def find_layout(module, slots, inp: Input, layout: str | None = None) -> str:
    """'btf' or 'tbf': whether the module takes [batch, time, ...] or time-major input."""
    if layout is not None:
        if layout not in ("btf", "tbf"):
            raise InputError(f"layout {layout!r}; expected 'btf' ([batch, time, features]) or 'tbf' (time-major)")
        return layout
    n, t = 2, 5
    x = inp.torch(n, t)
    errors = {}
    for name, arg in (("btf", x), ("tbf", x.transpose(0, 1))):
        try:
            seen = _batches_seen(module, slots, arg)
        except Exception as e:  # the module's own complaint about this layout
            errors[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}" if str(e) else type(e).__name__
            continue
        if all(b == n for b in seen):
            return name
        errors[name] = f"its stateful layers saw batch sizes {seen} for a batch of {n}"
    what = f"{inp.features} features" if inp.features else f"token ids below {inp.vocab}"
    raise InputError(f"{type(module).__name__} does not run on x [batch, time] of {what} "
                     f"({errors.get('btf')}) nor time-major ({errors.get('tbf')}); "
                     "expected forward(x) -> y: pass the right features=/vocab= (--features/--vocab)")


def _readout(stream: Streaming, inp: Input) -> tuple[str, int, bool]:
    """(readout, size, y_time_major) from y's shape at two lengths."""
    shapes = []
    for t in (5, 8):
        with torch.no_grad():
            y = first_tensor(stream.model(inp.torch(2, t).transpose(0, 1) if stream.time_major else inp.torch(2, t)))
        shapes.append(tuple(y.shape))
    (a, b), tm = shapes, stream.time_major
    time_axis, batch_axis = (0, 1) if tm else (1, 0)
    if len(a) in (2, 3) and a[time_axis] == 5 and b[time_axis] == 8 and a[batch_axis] == 2:
        return "every", (a[2] if len(a) == 3 else 1), tm
    if a == b and len(a) in (1, 2) and a[0] == 2:
        return "last", (a[1] if len(a) == 2 else 1), False
    trims = [s.path for s in stream.slots if s.mode == "trim"]
    hint = (f"; Conv1d {trims} pad both sides: drop their last (kernel-1)*dilation outputs to make them causal"
            if trims else "")
    raise refuse.NotStreamable([("", f"y has shape {list(a)} for 5 frames and {list(b)} for 8; expected "
                                     f"[batch, time, outputs] or [batch, outputs]{hint}")],
                               hint="expected one output per frame (or one per sequence)")


def plan(module: nn.Module, inp: Input, *, offline: bool = False, layout: str | None = None) -> Plan:
    """The streaming form of `module` (in eval mode), or NotStreamable naming the layers that stop it."""
    slots, _ = find_slots(module)
    order = find_layout(module, slots, inp, layout)
    static = refuse.static_reasons(module)
    if static:
        slots = find_slots(module, convs=False)[0]
    stream = Streaming(module, slots, time_major=order == "tbf")
    try:
        readout, size, y_tm = _readout(stream, inp)
        stream.y_time_major = y_tm
        reasons = static or refuse.probe(stream, lambda n, t: inp.torch(n, t, seed=1))
    except Refusal as e:
        reasons, readout, size = [(e.path, e.reason)], "every", 0
    if reasons and not offline:
        raise refuse.NotStreamable(reasons)
    if reasons and size == 0:
        raise refuse.NotStreamable(reasons, hint="it cannot be exported at all")
    return Plan(stream, inp, readout, size, order, reasons)


def trace(p: Plan, *, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """The streaming form traced to ONNX (TorchScript exporter), batch and time dynamic."""
    s = p.stream
    axes = {"x": {0: "batch", 1: "time"}, "y": {0: "batch", 1: "time"} if p.readout == "every" else {0: "batch"}}
    for st in s.states:
        axes[st.input] = axes[st.output] = {st.batch_axis: "batch"}
    buf = io.BytesIO()
    args = (p.inp.torch(2, 5), *s.zeros(2))
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # dynamo=False's deprecation and tracer warnings; parity decides
            torch.onnx.export(s, args, buf, dynamo=False, input_names=["x", *s.inputs], output_names=["y", *s.outputs],
                              dynamic_axes=axes, opset_version=opset, do_constant_folding=True)
    except Refusal as e:
        raise refuse.NotStreamable([(e.path, e.reason)]) from e
    except Exception as e:  # torch.onnx's own refusal of an operator
        raise ModelFileError(f"torch.onnx could not export {type(s.model).__name__} "
                             f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); expected operators ONNX "
                             f"opset {opset} has") from e
    proto = onnx.load_from_string(buf.getvalue())
    _state_dims(proto, s.states)
    proto.ir_version = min(proto.ir_version, IR_VERSION)
    proto.producer_name, proto.producer_version = "edgernn", __import__("edgernn").__version__
    return proto


def _state_dims(proto, states) -> None:
    """Every state input and output declares its shape: `batch` on its batch axis, sizes elsewhere
    (the tracer leaves a conv buffer's length symbolic on the output side)."""
    shapes = {n: s.shape for s in states for n in (s.input, s.output)}
    for v in (*proto.graph.input, *proto.graph.output):
        if v.name in shapes:
            dims = v.type.tensor_type.shape.dim
            del dims[:]
            for d in shapes[v.name]:
                dim = dims.add()
                if d is None:
                    dim.dim_param = "batch"
                else:
                    dim.dim_value = d


def metadata(p: Plan, *, opset: int, labels=None, extra: dict | None = None) -> dict:
    """The edgernn metadata of a traced module (parity filled in later)."""
    extra = dict(extra or {})
    rnns = [s.describe() for s in p.stream.slots if s.kind == "rnn"]
    cells = sorted({r["cell"] for r in rnns})
    model = {"cell": cells[0] if len(cells) == 1 else ("mixed" if cells else None),
             "layers": sum(r["layers"] for r in rnns), "hidden": rnns[0]["hidden"] if rnns else None,
             "bidirectional": bool(p.offline), "task": extra.pop("task", None), "source": "module",
             "class": f"{type(p.stream.model).__module__}.{type(p.stream.model).__qualname__}",
             "layout": p.layout, "stateful": [s.describe() for s in p.stream.slots]}
    meta = {"format": meta_mod.FORMAT,
            "input": {"name": "x", "dtype": "int64" if p.inp.vocab else "float32", "features": p.inp.features,
                      "vocab": p.inp.vocab},
            "output": {"name": "y", "size": p.size, "readout": p.readout,
                       "labels": list(labels) if labels is not None else None},
            "states": [s.meta() for s in p.stream.states], "model": model,
            "frontend": extra.pop("frontend", None), "normalize": extra.pop("normalize", None),
            "export": {"exporter": EXPORTER, "torch": torch.__version__.split("+")[0], "onnx": onnx.__version__,
                       "opset": opset, "source": "module"}}
    if p.offline:
        meta["offline"] = {"reasons": [{"path": a, "reason": r} for a, r in p.offline]}
    meta.update(extra)
    return meta


def export_module(module: nn.Module, path, *, features: int | None = None, vocab: int | None = None,
                  example: torch.Tensor | None = None, verify: bool = True, offline: bool = False,
                  layout: str | None = None, opset: int = DEFAULT_OPSET, labels=None,
                  progress: Callable[[int, int], None] | None = None, **meta) -> Exported:
    """Write `module` to `path` as one stateful ONNX file and check it against the module.

    module: forward(x) -> y, x [batch, time, features] float (or [batch, time] int64 tokens;
    a time-major module is found and fed transposed: the file always takes [batch, time, ...]),
    y [batch, time, ...] or [batch, ...]. features/vocab/example: x's size when the first layer
    does not tell. offline: write a model that cannot stream for whole-sequence use. meta:
    extra metadata (task, frontend, normalize, or keys of your own). Raises NotStreamable
    (an InputError) naming each layer that stops streaming, ParityError when the file is off.
    """
    path = Path(path)
    with eval_mode(module), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LSTM with projections is not supported with oneDNN")
        inp = guess_input(module, features=features, vocab=vocab, example=example)
        bidi = _rnn_model(module, inp, offline=offline, layout=layout)
        if bidi is not None:
            return _export_rnn_model(bidi, path, opset=opset, verify=verify, labels=labels, progress=progress,
                                     extra=meta)
        p = plan(module, inp, offline=offline, layout=layout)
        proto = trace(p, opset=opset)
        info = metadata(p, opset=opset, labels=labels, extra=meta)
        report = module_parity.check(p.stream, proto.SerializeToString(), inp, readout=p.readout,
                                     offline=bool(p.offline), progress=progress) if verify else None
    info["export"]["parity"] = parity.summary(report) if report else None
    set_meta(proto, info)
    fileio.write_bytes(path, proto.SerializeToString())
    return Exported((path,), report["max_abs_err"] if report else None, info, {"model": report} if report else {})


def _rnn_model(module: nn.Module, inp: Input, *, offline: bool, layout):
    """A bidirectional module that is one RNN plus a Linear head, as edgernn's RNNModel (which
    has a lookahead companion); None for every other module."""
    from edgernn.train import checkpoint
    from edgernn.train.models import RNNModel

    rnns = [m for m in module.modules() if isinstance(m, nn.RNNBase)]
    if len(rnns) != 1 or not rnns[0].bidirectional or getattr(rnns[0], "proj_size", 0) or inp.vocab:
        return None
    try:
        spec, renamed = checkpoint.infer_spec(module.state_dict(), nonlinearity=getattr(rnns[0], "nonlinearity", None))
        model = RNNModel(spec)
        model.load_state_dict(renamed, strict=False)
    except Exception:  # not that shape: the general path decides (and refuses with reasons)
        return None
    model.eval()
    slots, _ = find_slots(module, convs=False)
    stream = Streaming(module, slots, time_major=find_layout(module, slots, inp, layout) == "tbf")
    x = inp.torch(2, 11, seed=3)
    try:
        readout, _, stream.y_time_major = _readout(stream, inp)
        with torch.no_grad():
            ours = model(x)[0].numpy()
        theirs = module_parity.module_y(stream, x.numpy())
    except Exception:
        return None
    return model if readout == "every" and module_parity.err(theirs, ours) <= parity.TOLERANCE else None


def _export_rnn_model(model, path: Path, *, opset, verify, labels, progress, extra) -> Exported:
    from edgernn.train.checkpoint import Loaded

    info = graph.metadata_for(Loaded(model, "module", labels=labels, frontend=extra.pop("frontend", None)),
                              opset=opset)
    info.update(extra)
    proto = graph.build(model, info, opset=opset)
    report = parity.check(model, proto.SerializeToString(), progress=progress) if verify else None
    info["export"]["parity"] = parity.summary(report) if report else None
    info.update(companion.write_companion(model, info, path, opset=opset, verify=verify))
    set_meta(proto, info)
    fileio.write_bytes(path, proto.SerializeToString())
    files = (path, path.parent / info["lookahead"]["file"])
    return Exported(files, report["max_abs_err"] if report else None, info, {"model": report} if report else {})



def verify_file(module: nn.Module, onnx_model, *, offline: bool = False, features: int | None = None,
                vocab: int | None = None, layout: str | None = None,
                progress: Callable[[int, int], None] | None = None) -> tuple[dict, object]:
    """Check any ONNX file against `module` as export_module checks its own: (report, the RNNModel
    used for a bidirectional RNN + head, whose lookahead companion the caller may check, or None)."""
    with eval_mode(module):
        inp = guess_input(module, features=features, vocab=vocab)
        bidi = _rnn_model(module, inp, offline=offline, layout=layout)
        if bidi is not None:
            return parity.check(bidi, onnx_model, progress=progress), bidi
        p = plan(module, inp, offline=offline, layout=layout)
        return module_parity.check(p.stream, onnx_model, inp, readout=p.readout, offline=bool(p.offline),
                                   progress=progress), None
