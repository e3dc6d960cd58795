"""Which layers of a model mix time with no streaming form, named by their path.

Two looks. `static_reasons` reads the layer types: attention, Transformer layers, BatchNorm on
batch statistics, RNN cells stepped by Python code, bidirectional RNNs, non-causal Conv1d.
`probe` runs the streaming form (edgernn.export.streamify) on a short random sequence whole
and one frame at a time with the state carried; where the two disagree, the first layer (in the
order layers finish) whose output differs is the one named, and inside a forward that is no layer
of its own, the torch functions that mix time (torch.flip, cumsum, …) it called.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from edgernn.core.errors import InputError
from edgernn.export.streamify import Refusal, Streaming, conv_plan

PROBE_LENGTH, PROBE_BATCH = 9, 2
PROBE_TOLERANCE = 1e-4  # the probe only looks for a layer that reads the future; parity is the real check
TIME_MIXERS = {"flip", "fliplr", "flipud", "roll", "cumsum", "cumprod", "cummax", "cummin", "logcumsumexp", "sort",
               "argsort", "scaled_dot_product_attention", "stft", "istft", "fft", "rfft", "irfft", "fft_fft",
               "fft_rfft", "fft_irfft", "fft_ifft", "avg_pool1d", "max_pool1d", "adaptive_avg_pool1d",
               "adaptive_max_pool1d"}
_ATTENTION = (nn.MultiheadAttention, nn.Transformer, nn.TransformerEncoder, nn.TransformerDecoder,
              nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)


class NotStreamable(InputError):
    """The model has layers that mix time with no streaming form; `reasons` is [(path, reason)]."""

    def __init__(self, reasons: list[tuple[str, str]], *, hint: str = "pass --offline (offline=True) to write it "
                                                                        "for whole-sequence use only"):
        self.reasons = list(reasons)
        listed = "; ".join(f"{p or '<model>'}: {r}" for p, r in self.reasons)
        super().__init__(f"cannot stream this model: {listed}; {hint}")


def static_reasons(model: nn.Module) -> list[tuple[str, str]]:
    """(path, reason) for every layer whose type alone says it cannot stream."""
    out = []
    for path, m in model.named_modules():
        kind = type(m).__name__
        if isinstance(m, _ATTENTION):
            out.append((path, f"{kind} attends over the whole sequence (every frame sees later frames); "
                              "attention over time has no streaming form"))
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.training or not m.track_running_stats):
            out.append((path, f"{kind} normalises with the statistics of the batch it is given "
                              "(train mode or track_running_stats=False): it mixes time; expected running statistics "
                              "in eval mode"))
        elif isinstance(m, nn.RNNCellBase):
            out.append((path, f"{kind} is stepped by Python code: tracing unrolls that loop at one length; "
                              f"expected nn.{kind[:-4]} over the sequence"))
        elif isinstance(m, nn.RNNBase) and m.bidirectional:
            out.append((path, f"bidirectional {kind} reads the future (its reverse direction starts at the end "
                              "of the sequence)"))
        elif isinstance(m, nn.Conv1d):
            reason = conv_plan(m)[2]
            if reason:
                out.append((path, reason))
    return out


class _Calls(TorchFunctionMode):
    """The time-mixing torch functions called, each with the innermost layer running it."""

    def __init__(self, stack: list):
        super().__init__()
        self.stack, self.seen = stack, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in TIME_MIXERS:
            self.seen.append((self.stack[-1] if self.stack else "", name))
        return func(*args, **(kwargs or {}))


class _Recorder:
    """Forward hooks on every layer: the outputs of each call, and which layer is running."""

    def __init__(self, model: nn.Module):
        self.stack, self.outputs, self.order = [], {}, []
        self.handles = []
        for path, m in model.named_modules():
            self.handles.append(m.register_forward_pre_hook(lambda mod, a, p=path: self.stack.append(p)))
            self.handles.append(m.register_forward_hook(lambda mod, a, y, p=path: self._done(p, y)))

    def _done(self, path, y):
        self.stack.pop()
        while isinstance(y, (tuple, list)) and y:
            y = y[0]
        if torch.is_tensor(y) and path not in self.outputs:
            self.outputs[path] = y.detach()
            self.order.append(path)

    def close(self):
        for h in self.handles:
            h.remove()


def _differs(full: torch.Tensor, steps: list[torch.Tensor], length: int) -> bool:
    """Whether a layer's output over the whole sequence differs from its outputs frame by frame."""
    first = steps[0]
    if full.dim() != first.dim():
        return True
    axes = [a for a in range(full.dim()) if full.shape[a] != first.shape[a]]
    if not axes:  # no time axis: one answer per call, the last step's must match the sequence's
        got, ref = steps[-1], full
    elif len(axes) == 1:
        a = axes[0]
        extra = first.shape[a] - 1
        if full.shape[a] - extra != length or any(s.shape != first.shape for s in steps):
            return True
        got, ref = torch.cat([s.narrow(a, 0, 1) for s in steps], a), full.narrow(a, 0, length)
    else:
        return True
    if got.shape != ref.shape:
        return True
    if not torch.is_floating_point(ref):
        return not torch.equal(got, ref)
    return float((got - ref).abs().max()) > PROBE_TOLERANCE * max(1.0, float(ref.abs().max()))


def _run(stream: Streaming, x, states):
    with torch.no_grad():
        return stream(x, *states)


def probe(stream: Streaming, make_x, *, length: int = PROBE_LENGTH, batch: int = PROBE_BATCH) -> list[tuple[str, str]]:
    """(path, reason) for the layer that makes the stream differ from the whole sequence; [] if none."""
    x = make_x(batch, length)
    for slot in stream.slots:
        slot.pad_seen = 0.0
    rec = _Recorder(stream.model)
    calls = _Calls(rec.stack)
    try:
        with calls:
            try:
                y_full, *_ = _run(stream, x, stream.zeros(batch))
                full = dict(rec.outputs)
            except Refusal as e:
                return [(e.path, e.reason)]
            except Exception as e:  # the model's own error, in the layer that raised it
                return [(rec.stack[-1] if rec.stack else "", f"fails on a sequence of {length} frames "
                                                             f"({type(e).__name__}: {str(e).splitlines()[0][:160]})")]
            padded = [(s.path, s.context, s.pad_seen) for s in stream.slots if s.mode == "prepadded" and s.pad_seen]
            if padded:
                return [(p, f"Conv1d has padding=0 but its input does not start with the {c} zero frames of a left "
                            f"pad; expected F.pad(x, ({c}, 0)) before it, or padding={c} with the last {c} outputs "
                            "dropped") for p, c, _ in padded]
            steps = _stepped(stream, rec, x)
            if isinstance(steps, list):
                return steps
    finally:
        rec.close()
    bad = [p for p in rec.order if p in steps and len(steps[p]) == length and _differs(full[p], steps[p], length)]
    bad += [p for p in rec.order if p not in steps and p not in bad]
    if not bad:
        return []
    if calls.seen:  # a time-mixing function ran: it, not the layers after it, is the cause
        return [_blame(stream.model, p, calls.seen) for p in dict.fromkeys(p for p, _ in calls.seen)]
    return [_blame(stream.model, bad[0], calls.seen)]


def _stepped(stream: Streaming, rec: _Recorder, x) -> dict | list:
    """Each layer's outputs, one frame at a time with the state carried; or [(path, reason)]."""
    steps, states = {}, stream.zeros(x.shape[0])
    for t in range(x.shape[1]):
        rec.outputs, rec.stack[:] = {}, []
        try:
            _, *states = _run(stream, x[:, t:t + 1], states)
        except Refusal as e:
            return [(e.path, e.reason)]
        except Exception as e:  # the model's own error, in the layer that raised it
            return [(rec.stack[-1] if rec.stack else "", f"fails on one frame at a time "
                                                         f"({type(e).__name__}: {str(e).splitlines()[0][:160]})")]
        for p, v in rec.outputs.items():
            steps.setdefault(p, []).append(v)
    return steps


def _blame(model: nn.Module, path: str, seen: list) -> tuple[str, str]:
    layer = model.get_submodule(path) if path else model
    kind = type(layer).__name__
    names = sorted({n for p, n in seen if p == path})
    if names:
        return path, (f"the forward of {kind} calls {', '.join('torch.' + n for n in names)}, which mixes time: "
                      "a frame's output depends on frames after it")
    if path and not any(True for _ in layer.children()):
        return path, f"{kind} mixes time: a frame's output depends on frames after it (no streaming form)"
    return path, (f"the forward of {kind} mixes time outside any layer edgernn can stream (a pooling, mean, "
                  "softmax or indexing over time?): a frame's output depends on frames after it")
