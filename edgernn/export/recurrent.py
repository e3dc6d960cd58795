"""The forward of one nn.RNN/LSTM/GRU with its state given and returned: what streamify threads.

    y, (hn, cn) = run(lstm, x, (h0, c0))     # x in the module's own layout (batch_first or not)

An ordinary layer calls torch's own forward, which the TorchScript exporter writes as the ONNX
LSTM/GRU/RNN operator. An LSTM with `proj_size` has no ONNX operator: its layers run a scripted
time loop (an ONNX Loop whose trip count is the input's length, so time stays dynamic).
"""

from __future__ import annotations

import functools
import warnings

import torch
from torch import nn


def cell_name(m: nn.RNNBase) -> str:
    """The edgernn cell name of a recurrent module, read from the module itself."""
    if isinstance(m, nn.LSTM):
        return "lstm"
    if isinstance(m, nn.GRU):
        return "gru"
    return "rnn_relu" if m.nonlinearity == "relu" else "rnn_tanh"


def state_sizes(m: nn.RNNBase) -> list[tuple[str, int]]:
    """(suffix, width) of each state: [("h", H or proj_size)] and, for an LSTM, ("c", H)."""
    proj = getattr(m, "proj_size", 0) or 0
    sizes = [("h", proj or m.hidden_size)]
    if isinstance(m, nn.LSTM):
        sizes.append(("c", m.hidden_size))
    return sizes


def run(m: nn.RNNBase, x: torch.Tensor, states: tuple) -> tuple[torch.Tensor, tuple]:
    """`m` over x from `states` ((h0,) or (h0, c0), each (L*D, N, width)); returns (y, new states)."""
    lstm = isinstance(m, nn.LSTM)
    if lstm and getattr(m, "proj_size", 0):
        return _projected(m, x, *states)
    y, new = type(m).forward(m, x, tuple(states) if lstm else states[0])
    return y, (tuple(new) if lstm else (new,))


def _proj_layer(x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
                b_ih: torch.Tensor, b_hh: torch.Tensor, w_hr: torch.Tensor):
    """One direction of one projected LSTM layer: x (T, N, I), h (N, P), c (N, H) -> (T, N, P), h, c."""
    xs = torch.matmul(x, w_ih.t()) + b_ih  # (T, N, 4H): the input part of every step at once
    ys = []
    for t in range(x.size(0)):
        g = xs[t] + torch.matmul(h, w_hh.t()) + b_hh
        i, f, gg, o = g.chunk(4, 1)  # torch's gate order
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
        h = torch.matmul(torch.sigmoid(o) * torch.tanh(c), w_hr.t())
        ys.append(h)
    return torch.stack(ys, 0), h, c


@functools.lru_cache(maxsize=1)
def _scripted():
    """_proj_layer scripted (once, when first needed): its loop becomes an ONNX Loop over time."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script's; the exporter still needs it
        return torch.jit.script(_proj_layer)


def _weights(m: nn.LSTM, layer: int, suffix: str):
    k = f"l{layer}{suffix}"
    w_ih = getattr(m, f"weight_ih_{k}")
    zeros = torch.zeros(w_ih.shape[0], dtype=w_ih.dtype)
    b_ih = getattr(m, f"bias_ih_{k}") if m.bias else zeros
    b_hh = getattr(m, f"bias_hh_{k}") if m.bias else zeros
    return w_ih, getattr(m, f"weight_hh_{k}"), b_ih, b_hh, getattr(m, f"weight_hr_{k}")


def _projected(m: nn.LSTM, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor):
    """A projected LSTM layer by layer; the reverse direction runs over the flipped sequence."""
    y = x.transpose(0, 1) if m.batch_first else x  # (T, N, I)
    d = 2 if m.bidirectional else 1
    hs, cs = [], []
    for layer in range(m.num_layers):
        outs = []
        for k, suffix in enumerate(("", "_reverse")[:d]):
            i = layer * d + k
            seq = y.flip(0) if k else y
            out, h, c = _scripted()(seq, h0[i], c0[i], *_weights(m, layer, suffix))
            outs.append(out.flip(0) if k else out)
            hs.append(h)
            cs.append(c)
        y = torch.cat(outs, 2) if d == 2 else outs[0]
    y = y.transpose(0, 1) if m.batch_first else y
    return y, (torch.stack(hs), torch.stack(cs))
