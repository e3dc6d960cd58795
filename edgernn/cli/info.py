"""`edgernn info`: describe a model file (.onnx, torch-free) or a checkpoint (.pt, needs torch)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgernn.core.errors import InputError
from edgernn.core.wording import plural


def describe(path, **model) -> dict:
    """model: what `stream` takes for a third-party file (states, constants, layout, frame)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; expected an .onnx model or a .pt checkpoint")
    if path.suffix.lower() == ".onnx":
        return _describe_onnx(path, **model)
    if any(v for v in model.values()):
        raise InputError(f"{path}: --state/--const/--layout/--frame describe an .onnx model; expected an .onnx file")
    return _describe_pt(path)


def _session_kind(rt) -> str:
    from edgernn.runtime import ortapi

    if rt.backend.kind == "native":
        return f"onnxruntime C API ({ortapi.api().version})"
    if rt.backend.kind == "device":
        return f"onnxruntime Python binding on {rt.providers[0]}"
    return f"onnxruntime Python binding ({ortapi.reason() or 'asked for'})"


def _frame_text(sig) -> str:
    if sig.frame_open:
        return (f"size symbolic ({sig.frame_symbol!r}): give --frame N or --window N, "
                "or the first frame's length fixes it")
    return f"{plural(sig.frame_shape[0], 'value')} a step" if sig.frame_shape else "one token id a step"


def pairing_lines(rt) -> str:
    """The pairing and frame in use, one line each (what `stream -v` prints before streaming)."""
    sig = rt.signature
    lines = [f"pairing {sig.pairing}: " + (", ".join(f"{s.input} -> {s.output}" for s in sig.states) or "no state"),
             f"frame   {sig.x} {np.dtype(sig.dtype).name}, layout {sig.layout}: {_frame_text(sig)}; y = {sig.y}"]
    if sig.constants:
        lines.append("const   " + ", ".join(f"{k}={v.tolist()}" for k, v in sig.constants.items()))
    return "\n".join(lines)


def _describe_onnx(path: Path, *, states=None, constants=None, layout=None, frame=None) -> dict:
    from edgernn.runtime import providers
    from edgernn.runtime.engine import Runtime

    # lists the constants still needed instead of refusing
    rt = Runtime(path, states=states or None, constants=constants or None, layout=layout, frame=frame,
                 _describe_only=True)
    sig = rt.signature
    io = lambda args: [{"name": a.name, "type": a.type, "shape": a.shape} for a in args]  # noqa: E731
    return {
        "file": str(path), "kind": "onnx", "bytes": path.stat().st_size,
        "inputs": io(rt.session.get_inputs()), "outputs": io(rt.session.get_outputs()),
        "frame": {"input": sig.x, "dtype": sig.dtype.__name__, "shape": list(sig.frame_shape), "time_axis": sig.has_time,
                  "layout": sig.layout, "size_symbol": sig.frame_symbol, "text": _frame_text(sig)},
        "y": sig.y,
        "states": [{"input": s.input, "output": s.output, "batch_axis": s.batch_axis,
                    "shape": ["batch" if i == s.batch_axis else d for i, d in enumerate(s.shape)]}
                   for s in sig.states],
        "pairing": sig.pairing,
        "constants": {k: v.tolist() for k, v in sig.constants.items()},
        "constants_needed": [i.name for i in rt.session.get_inputs()
                             if i.name not in {sig.x, *(s.input for s in sig.states), *sig.constants}],
        "session": _session_kind(rt),
        "metadata": rt.meta,
        "providers_available": providers.available(),
    }


def _describe_pt(path: Path) -> dict:
    try:
        from edgernn.train import checkpoint
    except ImportError as e:
        raise InputError(f"{path}: reading a checkpoint needs torch ({e}); expected `pip install 'edgernn[train]'`") from e
    from edgernn.train import seq2seq_io

    obj = checkpoint.read(path)
    if seq2seq_io.is_seq2seq_checkpoint(obj):
        return _describe_seq2seq(path, seq2seq_io.load(path))
    loaded = checkpoint.load(path, obj=obj)
    spec = loaded.model.spec
    params = sum(p.numel() for p in loaded.model.parameters())
    return {"file": str(path), "kind": loaded.kind, "spec": spec.to_dict(), "parameters": params,
            "labels": loaded.labels, "frontend": loaded.frontend, "metrics": loaded.metrics,
            "task": loaded.extra.get("task"), "ensemble": loaded.extra.get("ensemble")}


def ensemble_text(ens: dict | None) -> str:
    """', an ensemble of 2 (gru 2x128 + gru 2x128, geometric mean)' or nothing."""
    if not ens:
        return ""
    parts = " + ".join(f"{m['spec']['cell']} {m['spec']['layers']}x{m['spec']['hidden']}" for m in ens["members"])
    return f", an ensemble of {len(ens['members'])} ({parts}; {ens.get('combine')} mean of posteriors)"


def _describe_seq2seq(path: Path, pair) -> dict:
    halves = {role: {"spec": getattr(pair, role).spec.to_dict(),
                     "parameters": sum(p.numel() for p in getattr(pair, role).parameters())}
              for role in ("encoder", "decoder")}
    return {"file": str(path), "kind": "seq2seq checkpoint", "halves": halves, "tokens": len(pair.tokens),
            "max_length": pair.max_length, "metrics": pair.metrics,
            "export": "edgernn export writes NAME.encoder.onnx and NAME.decoder.onnx from it"}


def _render_seq2seq(d: dict) -> str:
    lines = [f"{d['file']}  ({d['kind']})"]
    for role, h in d["halves"].items():
        s = h["spec"]
        lines.append(f"  {role:<7} {s['cell']} x{s['layers']} hidden {s['hidden']}, {h['parameters']} parameters")
    lines.append(f"  tokens  {d['tokens']} (output at most {d['max_length']} tokens)")
    m = d.get("metrics") or {}
    if m.get("metric") is not None and m.get("value") is not None:
        lines.append(f"  metrics {m['metric']} {m['value']:.4g}"
                     + (f" (baseline {m['baseline']:.4g})" if m.get("baseline") is not None else ""))
    lines.append(f"  export  {d['export']}")
    return "\n".join(lines)


def render(d: dict) -> str:
    if d["kind"] == "seq2seq checkpoint":
        return _render_seq2seq(d)
    lines = [f"{d['file']}  ({d['kind']})"]
    if d["kind"] != "onnx":
        s = d["spec"]
        lines.append(f"  model   {s['cell']} x{s['layers']} hidden {s['hidden']}"
                     f"{' bidirectional' if s['bidirectional'] else ''}, {d['parameters']} parameters"
                     f"{ensemble_text(d.get('ensemble'))}")
        what = f"tokens (vocab {s['vocab']})" if s["vocab"] else f"{s['features']} features"
        lines.append(f"  input   {what}; output {s['outputs']} ({s['task']}, readout {s['readout']})")
        if d.get("metrics"):
            m = d["metrics"]
            lines.append(f"  metrics {m.get('metric')} {m.get('value'):.4g} (baseline {m.get('baseline'):.4g})")
        return "\n".join(lines)
    for a in d["inputs"]:
        lines.append(f"  input   {a['name']:<10} {a['type']:<14} {a['shape']}")
    for a in d["outputs"]:
        lines.append(f"  output  {a['name']:<10} {a['type']:<14} {a['shape']}")
    for s in d["states"]:
        axis = f"batch axis {s['batch_axis']}" if s["batch_axis"] >= 0 else "no batch axis: one stream per call"
        lines.append(f"  state   {s['input']} -> {s['output']}  shape {s['shape']} ({axis})")
    f = d["frame"]
    lines.append(f"  pairing {d['pairing']};  y = {d['y']}")
    lines.append(f"  frame   {f['input']} {f['dtype']}, layout {f['layout']}: {f['text']}")
    if d.get("constants"):
        lines.append("  const   " + ", ".join(f"{k}={v}" for k, v in d["constants"].items()))
    m = d.get("metadata")
    if m:
        mod = m["model"]
        lines.append(f"  model   {mod['cell']} x{mod['layers']} hidden {mod['hidden']}"
                     f"{' bidirectional' if mod['bidirectional'] else ''}, task {mod['task']}, "
                     f"readout {m['output'].get('readout')}{ensemble_text(m.get('ensemble'))}")
        if m["output"].get("labels"):
            lines.append(f"  labels  {', '.join(m['output']['labels'])}")
        if m.get("frontend"):
            lines.append(f"  frontend {json.dumps(m['frontend'])}")
        ex = m.get("export") or {}
        par = ex.get("parity")
        lines.append(f"  export  {ex.get('exporter')} opset {ex.get('opset')} torch {ex.get('torch')}; parity "
                     + (f"max error {par['max_abs_err']:.2e}" if par else "not verified"))
    else:
        lines.append("  metadata: none (third-party model)")
    if d["constants_needed"]:
        lines.append(f"  constants needed on every call (--const NAME=VALUE): {', '.join(d['constants_needed'])}")
    lines.append(f"  session {d['session']};  providers available here: {', '.join(d['providers_available'])}")
    return "\n".join(lines)
