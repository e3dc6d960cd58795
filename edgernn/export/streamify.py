"""A user's module with every piece of state made explicit: `Streaming(module, slots)`.

    slots, refused = find_slots(model)                # the layers that carry state over time
    s = Streaming(model, slots)                       # forward(x, *states) -> (y, *new_states)
    y, *states = s(x, *s.zeros(batch))

Each nn.RNN/LSTM/GRU reads its state from the inputs `PATH.h0` (and `PATH.c0`) and writes
`PATH.hn` (`PATH.cn`), PATH being its place in the module (`encoder.rnn`). A causal Conv1d keeps
its last (kernel-1)*dilation input frames as `PATH.buf0 -> PATH.bufn` and convolves them in
front of the new frames, so a chunk of any length (one frame included) continues the sequence.
Two causal forms are recognised:

- "trim": padding=(k-1)*d on both sides and the model drops the last (k-1)*d outputs: the left
  padding becomes the buffer, the right padding stays zeros (its outputs are dropped anyway).
- "prepadded": padding=0 and the model pads the input on the left with (k-1)*d zeros itself
  (F.pad(x, (L, 0)) or nn.ConstantPad1d): those zeros are replaced by the buffer.

Only inside `Streaming.forward`, each RNN's forward and each Conv1d's `_conv_forward` (so a
subclass's own forward still runs around it) are replaced on the instance; they are restored
afterwards, whatever happens.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from edgernn.export import recurrent


class Refusal(Exception):
    """A layer that cannot be streamed, met while the model runs (internal; see refuse.py)."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path or '<model>'}: {reason}")
        self.path, self.reason = path, reason


@dataclass(frozen=True)
class StateIO:
    """One state input/output pair of the exported graph."""

    input: str
    output: str
    shape: tuple  # with None at batch_axis
    batch_axis: int

    def zeros(self, n: int) -> torch.Tensor:
        return torch.zeros([n if d is None else d for d in self.shape])

    def meta(self) -> dict:
        return {"input": self.input, "output": self.output, "batch_axis": self.batch_axis,
                "shape": ["batch" if d is None else d for d in self.shape]}


@dataclass
class Slot:
    """One stateful layer: its path, the module, how it streams and its state pairs."""

    path: str
    module: nn.Module
    kind: str  # "rnn" | "conv"
    states: list = field(default_factory=list)  # StateIO, ...
    mode: str = ""  # conv: "trim" | "prepadded"
    context: int = 0  # conv: (kernel-1)*dilation frames kept
    calls: int = 0
    pad_seen: float = 0.0  # conv "prepadded": the largest |value| met where the model's zeros should be

    def describe(self) -> dict:
        m = self.module
        if self.kind == "conv":
            return {"path": self.path, "layer": "Conv1d", "mode": self.mode, "context": self.context}
        d = {"path": self.path, "layer": type(m).__name__, "cell": recurrent.cell_name(m), "layers": m.num_layers,
             "hidden": m.hidden_size, "bidirectional": m.bidirectional, "batch_first": m.batch_first}
        if getattr(m, "proj_size", 0):
            d["proj_size"] = m.proj_size
        return d


# The method each kind of layer has replaced on its instance: an RNN's whole forward; a Conv1d's
# _conv_forward, so that a subclass's forward (a trim after the conv, say) still runs around it.
_PATCHED = {"rnn": "forward", "conv": "_conv_forward"}


def _name(path: str, suffix: str) -> str:
    return f"{path}.{suffix}" if path else suffix


def _frames(n: int) -> str:
    return f"{n} frame" + ("" if n == 1 else "s")


def conv_plan(conv: nn.Conv1d) -> tuple[str, int, str | None]:
    """(mode, context, reason): how a Conv1d streams, or why it cannot (reason not None)."""
    k, d, s = conv.kernel_size[0], conv.dilation[0], conv.stride[0]
    ctx = (k - 1) * d
    pad = conv.padding if isinstance(conv.padding, str) else conv.padding[0]
    if s != 1 and ctx + 1 > 1:
        return "", ctx, f"Conv1d with stride {s} changes the frame rate; expected stride 1 for a streaming form"
    if ctx == 0:
        return ("", 0, None) if pad in (0, "valid") else ("", 0, f"Conv1d of kernel 1 with padding {pad!r} adds "
                                                                  "frames; expected padding 0")
    if pad == "same":
        return "", ctx, (f"Conv1d with padding='same' (kernel {k}, dilation {d}) reads {_frames(ctx // 2)} ahead; "
                         f"expected causal padding: padding={ctx} and drop the last {ctx} outputs, or padding=0 "
                         f"after F.pad(x, ({ctx}, 0))")
    if pad in (0, "valid"):
        return "prepadded", ctx, None
    if conv.padding_mode != "zeros":
        return "", ctx, f"Conv1d with padding_mode={conv.padding_mode!r}; expected zeros padding for a streaming form"
    if pad == ctx:
        return "trim", ctx, None
    ahead = pad if pad < ctx else pad - ctx
    return "", ctx, (f"Conv1d with padding {pad} on both sides (kernel {k}, dilation {d}) reads {_frames(ahead)} "
                     f"ahead; expected padding={ctx} with the last {ctx} outputs dropped, or padding=0 after "
                     f"F.pad(x, ({ctx}, 0))")


def find_slots(model: nn.Module, *, convs: bool = True) -> tuple[list[Slot], list[tuple[str, str]]]:
    """The stateful layers of `model`, and (path, reason) for the Conv1d layers that cannot stream."""
    slots, refused = [], []
    for path, m in model.named_modules():
        if isinstance(m, (nn.RNN, nn.LSTM, nn.GRU)):
            d = m.num_layers * (2 if m.bidirectional else 1)
            states = [StateIO(_name(path, f"{k}0"), _name(path, f"{k}n"), (d, None, w), 1)
                      for k, w in recurrent.state_sizes(m)]
            slots.append(Slot(path, m, "rnn", states))
        elif isinstance(m, nn.Conv1d) and convs:
            mode, ctx, reason = conv_plan(m)
            if reason:
                refused.append((path, reason))
            elif ctx:
                states = [StateIO(_name(path, "buf0"), _name(path, "bufn"), (None, m.in_channels, ctx), 0)]
                slots.append(Slot(path, m, "conv", states, mode=mode, context=ctx))
    return slots, refused


def first_tensor(y):
    """The model's y: its output, or the first element of a tuple/list it returns."""
    while isinstance(y, (tuple, list)) and y:
        y = y[0]
    if not torch.is_tensor(y):
        raise Refusal("", f"forward returned {type(y).__name__}; expected a tensor y (or a tuple whose first item is y)")
    return y


class Streaming(nn.Module):
    """forward(x, *states) -> (y, *new_states): `model` with its state as explicit inputs and outputs.

    x is (N, T, F) or (N, T) tokens; a time-major model gets it transposed. y comes back
    (N, T, ...) or (N, ...) for a model that answers once per sequence.
    """

    def __init__(self, model: nn.Module, slots: list[Slot], *, time_major: bool = False, y_time_major: bool = False):
        super().__init__()
        self.model = model
        self.slots = slots
        self.time_major, self.y_time_major = time_major, y_time_major
        self.states = [s for slot in slots for s in slot.states]
        self._feed, self._new = {}, {}
        self.training = model.training  # torch.onnx.export restores this mode on every layer afterwards

    @property
    def inputs(self) -> list[str]:
        return [s.input for s in self.states]

    @property
    def outputs(self) -> list[str]:
        return [s.output for s in self.states]

    def zeros(self, n: int) -> list[torch.Tensor]:
        return [s.zeros(n) for s in self.states]

    def forward(self, x, *states):
        self._feed, self._new = dict(zip(self.inputs, states)), {}
        with self.threaded():
            y = first_tensor(self.model(x.transpose(0, 1) if self.time_major else x))
        for slot in self.slots:
            if slot.calls != 1:
                raise Refusal(slot.path, f"{type(slot.module).__name__} ran {slot.calls} times in one forward; "
                                         "expected once (its state is one input and one output)")
        y = y.transpose(0, 1) if self.y_time_major else y
        return (y, *[self._new[o] for o in self.outputs])

    @contextlib.contextmanager
    def threaded(self):
        """Each slot's forward replaced by its state-threading form, restored on exit."""
        saved = []  # (module, attribute, the instance's own value or None)
        for slot in self.slots:
            slot.calls = 0
            attr = _PATCHED[slot.kind]
            saved.append((slot.module, attr, vars(slot.module).get(attr)))
            setattr(slot.module, attr, (self._rnn if slot.kind == "rnn" else self._conv)(slot))
        try:
            yield
        finally:
            for module, attr, own in saved:
                if own is None:
                    delattr(module, attr)
                else:
                    setattr(module, attr, own)

    def _rnn(self, slot: Slot):
        m = slot.module

        def forward(input, hx=None):
            if hx is not None:
                raise Refusal(slot.path, f"{type(m).__name__} is given an initial state by the model; edgernn makes "
                                         "its state an input (zeros when a stream starts): call it without one")
            if isinstance(input, nn.utils.rnn.PackedSequence):
                raise Refusal(slot.path, f"{type(m).__name__} is given a PackedSequence; a stream has one length for "
                                         "the whole batch: pass the padded tensor")
            if input.dim() != 3:
                raise Refusal(slot.path, f"{type(m).__name__} got a {input.dim()}-D input; expected batched 3-D input")
            slot.calls += 1
            y, new = recurrent.run(m, input, tuple(self._feed[s.input] for s in slot.states))
            self._new.update({s.output: v for s, v in zip(slot.states, new)})
            return y, (tuple(new) if isinstance(m, nn.LSTM) else new[0])

        return forward

    def _conv(self, slot: Slot):
        m, ctx = slot.module, slot.context

        def forward(u, weight, bias):  # Conv1d._conv_forward: a subclass's own forward still runs around it
            if u.dim() != 3:
                raise Refusal(slot.path, f"Conv1d got a {u.dim()}-D input; expected (batch, channels, time)")
            slot.calls += 1
            buf = self._feed[slot.states[0].input]
            if slot.mode == "trim":
                v = torch.cat([buf, u], 2)
                out = F.conv1d(F.pad(v, (0, ctx)), weight, bias, 1, 0, m.dilation, m.groups)
            else:
                if not torch.jit.is_tracing() and u.shape[2] >= ctx:
                    slot.pad_seen = max(slot.pad_seen, float(u[:, :, :ctx].abs().max()))
                v = torch.cat([buf, u[:, :, ctx:]], 2)
                out = F.conv1d(v, weight, bias, 1, 0, m.dilation, m.groups)
            self._new[slot.states[0].output] = v[:, :, -ctx:]
            return out

        return forward
