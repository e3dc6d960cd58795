"""Bidirectional models streamed with bounded lookahead: the chunked rule in PyTorch.

The rule (a latency-controlled bidirectional RNN). Frames are cut into chunks of C; the output
of the chunk [t0, t0+C) is computed over the window [t0, min(t0+C+R, L)):
  - in every layer the forward direction starts from the state that layer carried at t0, runs
    over the whole window, and carries on the state it had after frame t0+C-1;
  - in every layer the backward direction starts from zeros at the window's end;
  - the next layer reads this layer's output over the window;
  - the head reads the C chunk frames.
R >= L is the offline model; R = 0 lets the backward direction see only the chunk.

This is the reference, and a differentiable training forward. The exported form of one window
is the companion graph NAME.lookahead.onnx (edgernn.export.companion), which the torch-free
runtime (edgernn.runtime.lookahead) drives one window at a time.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from edgernn.runtime.lookahead import check_options
from edgernn.train.models import RNNModel

# One direction of one layer, as nn.RNN/LSTM/GRU call it: (input, hx, params, has_biases,
# num_layers, dropout, train, bidirectional, batch_first).
_VF_RNN = {"lstm": torch._VF.lstm, "gru": torch._VF.gru, "rnn_tanh": torch._VF.rnn_tanh,
           "rnn_relu": torch._VF.rnn_relu}


def _params(model: RNNModel, layer: int, reverse: bool) -> list[torch.Tensor]:
    suffix = "_reverse" if reverse else ""
    return [getattr(model.rnn, f"{name}_l{layer}{suffix}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]


def _run(cell: str, params, x: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
    """One direction of one layer, forward in time: x (N, T, I), state of (1, N, H) -> (N, T, H), state."""
    if cell == "lstm":
        out, h, c = _VF_RNN[cell](x, state, params, True, 1, 0.0, False, False, True)
        return out, (h, c)
    out, h = _VF_RNN[cell](x, state[0], params, True, 1, 0.0, False, False, True)
    return out, (h,)


def _window(model: RNNModel, u: torch.Tensor, carried: list, c: int) -> tuple[torch.Tensor, list]:
    """One window through every layer: u (N, W, I) -> last layer's (N, W, 2H), forward states after frame c-1."""
    spec = model.spec
    new = []
    for layer in range(spec.layers):
        if layer and model.training and spec.dropout:
            u = F.dropout(u, spec.dropout, training=True)  # between layers, as nn.LSTM does
        fwd = _params(model, layer, False)
        # The forward run over the window, split after the chunk: its state there is carried on.
        head, state = _run(spec.cell, fwd, u[:, :c], carried[layer])
        parts = [head]
        if c < u.shape[1]:
            parts.append(_run(spec.cell, fwd, u[:, c:], state)[0])
        zeros = tuple(torch.zeros_like(s) for s in state)
        back = _run(spec.cell, _params(model, layer, True), u.flip(1), zeros)[0].flip(1)
        u = torch.cat([torch.cat(parts, 1), back], dim=-1)  # (N, W, 2H): as torch concatenates
        new.append(state)
    return u, new


def _front(model: RNNModel, x: torch.Tensor) -> torch.Tensor:
    """Normalisation and embedding, as RNNModel.features does before its RNN."""
    if not model.spec.vocab:
        x = (x - model.in_mean) / model.in_std
    return model.embed(x) if model.embed is not None else x


def chunked_forward(model: RNNModel, x: torch.Tensor, *, chunk: int = 1, lookahead=None, normalized: bool = False,
                    batched: bool = False) -> torch.Tensor:
    """The chunked rule over whole sequences: x (N, L, F) or (N, L) -> y (N, L, outputs).

    lookahead None or math.inf is unbounded: the offline model. A unidirectional model ignores
    both options. `normalized=True` skips the output de-normalisation, as RNNModel.forward.
    Differentiable: train with it to make a model exact at its streaming latency; pass
    `batched=True` there (the same numbers, the windows of a layer run as one batch: about 3x
    faster at chunk 1). The default is the reference: one window after the other, as streamed.
    """
    c, r = check_options(chunk, lookahead)
    if not model.spec.bidirectional:
        return model(x, normalized=normalized)[0]
    u = _front(model, x)  # (N, L, I)
    n, length = u.shape[:2]
    r = length if math.isinf(r) else int(r)
    zero = torch.zeros(1, n, model.spec.hidden, dtype=u.dtype, device=u.device)
    carried = [(zero, zero) if model.spec.cell == "lstm" else (zero,)] * model.spec.layers
    if batched and length:
        out = _batched(model, u, carried, c, min(c + r, max(length, c)))  # no window outgrows the input
    else:
        outs = []
        for t0 in range(0, length, c):
            cc = min(c, length - t0)
            out, carried = _window(model, u[:, t0:min(t0 + c + r, length)], carried, cc)
            outs.append(out[:, :cc])
        out = torch.cat(outs, 1) if outs else u.new_zeros(n, 0, 2 * model.spec.hidden)
    y = model.head(out) if model.head is not None else out
    return y if normalized else y * model.out_std + model.out_mean


def _batched(model: RNNModel, u: torch.Tensor, carried: list, c: int, w: int) -> torch.Tensor:
    """All K windows of each layer at once: (N, L, I) -> the chunk frames' outputs (N, L, 2H).

    Windows are zero-padded past the input's end to W frames; padding is only ever read after
    the valid frames in time, so it never reaches a valid output (the backward run reverses
    each window's valid part only). The forward state still passes chunk to chunk in a loop.
    """
    n, length = u.shape[:2]
    k = -(-length // c)
    pad = u.new_zeros(n, max(0, (k - 1) * c + w - length), u.shape[2])
    idx = torch.arange(k)[:, None] * c + torch.arange(w)  # (K, W): frame of each window position
    v = torch.cat([u, pad], 1)[:, idx].transpose(0, 1)  # (K, N, W, I)
    lens = (length - torch.arange(k) * c).clamp(max=w)  # valid frames per window
    j = torch.arange(w)
    rev = torch.where(j < lens[:, None], lens[:, None] - 1 - j, j).to(u.device)  # (K, W), an involution
    spec = model.spec
    for layer in range(spec.layers):
        if layer and model.training and spec.dropout:
            v = F.dropout(v, spec.dropout, training=True)
        fwd = _params(model, layer, False)
        state, heads, starts = carried[layer], [], []
        for i, chunk_in in enumerate(v[:, :, :c].unbind(0)):  # unbind: one gradient stack, not K scatters
            cc = min(c, int(lens[i]))
            out, state = _run(spec.cell, fwd, chunk_in[:, :cc], state)
            heads.append(F.pad(out, (0, 0, 0, c - cc)))
            starts.append(state)
        yf = torch.stack(heads)  # (K, N, C, H)
        if w > c:
            init = tuple(torch.cat([s[i] for s in starts], 1) for i in range(len(state)))  # (1, K*N, H)
            rest = _run(spec.cell, fwd, v[:, :, c:].reshape(k * n, w - c, -1), init)[0]
            yf = torch.cat([yf, rest.reshape(k, n, w - c, -1)], 2)
        back_in = _time_gather(v, rev).reshape(k * n, w, -1)
        zeros = tuple(torch.zeros(1, k * n, spec.hidden, dtype=u.dtype, device=u.device) for _ in state)
        back = _time_gather(_run(spec.cell, _params(model, layer, True), back_in, zeros)[0].reshape(k, n, w, -1), rev)
        v = torch.cat([yf, back], -1)  # (K, N, W, 2H)
    return v[:, :, :c].transpose(0, 1).reshape(n, k * c, -1)[:, :length]


def _time_gather(v: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """v (K, N, W, D) with positions permuted per window: out[k, :, j] = v[k, :, index[k, j]]."""
    k, n, w, d = v.shape
    return v.gather(2, index[:, None, :, None].expand(k, n, w, d))


def chunked_predictor(model: RNNModel, *, chunk: int, lookahead):
    """numpy in, numpy out, no gradients, under the chunked rule: what a task's evaluate() takes."""
    def predict(x: np.ndarray) -> np.ndarray:
        was = model.training
        model.eval()
        with torch.no_grad():
            y = chunked_forward(model, torch.from_numpy(x), chunk=chunk, lookahead=lookahead)
        model.train(was)
        return y.numpy()
    return predict
