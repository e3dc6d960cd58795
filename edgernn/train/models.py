"""The PyTorch model built from a ModelSpec: optional embedding/projection → RNN → linear head.

State is explicit: `forward(x, state) -> (y, state)`, never hidden inside the module, so the
exported graph and the runtime can carry it exactly as training did.
"""

from __future__ import annotations

import torch
from torch import nn

from edgernn.core.spec import ModelSpec

RNNS = {"rnn_tanh": nn.RNN, "rnn_relu": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}

State = tuple[torch.Tensor, ...]  # (h,) or (h, c); each (L*D, N, H)


class RNNModel(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        if spec.vocab:
            self.embed = nn.Embedding(spec.vocab, spec.embed)
        elif spec.embed:
            self.embed = nn.Linear(spec.features, spec.embed)
        else:
            self.embed = None
        kwargs = {"nonlinearity": "relu" if spec.cell == "rnn_relu" else "tanh"} if spec.cell.startswith("rnn") else {}
        self.rnn = RNNS[spec.cell](spec.rnn_input, spec.hidden, num_layers=spec.layers, batch_first=True,
                                   bidirectional=spec.bidirectional,
                                   dropout=spec.dropout if spec.layers > 1 else 0.0, **kwargs)
        self.head = nn.Linear(spec.directions * spec.hidden, spec.outputs) if spec.head else None
        # Normalisation lives in the model (and the exported graph), so no caller can forget it.
        n_in = 1 if spec.vocab else spec.features
        self.register_buffer("in_mean", torch.zeros(n_in))
        self.register_buffer("in_std", torch.ones(n_in))
        self.register_buffer("out_mean", torch.zeros(spec.outputs))
        self.register_buffer("out_std", torch.ones(spec.outputs))

    def zero_state(self, batch: int) -> State:
        shape = (self.spec.layers * self.spec.directions, batch, self.spec.hidden)
        z = torch.zeros(shape, device=self.in_mean.device)
        return (z, z.clone()) if self.spec.cell == "lstm" else (z,)

    def set_normalization(self, *, in_mean=None, in_std=None, out_mean=None, out_std=None) -> None:
        for name, value in (("in_mean", in_mean), ("in_std", in_std), ("out_mean", out_mean), ("out_std", out_std)):
            if value is not None:
                getattr(self, name).copy_(torch.as_tensor(value, dtype=torch.float32).reshape(-1))

    def features(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """x (N, L, F) float or (N, L) int64 -> the last layer's outputs (N, L, D*H) and the state."""
        if not self.spec.vocab:
            x = (x - self.in_mean) / self.in_std
        if self.embed is not None:
            x = self.embed(x)
        if state is None:
            state = self.zero_state(x.shape[0])
        if self.spec.cell == "lstm":
            out, (h, c) = self.rnn(x, (state[0], state[1]))
            return out, (h, c)
        out, h = self.rnn(x, state[0])
        return out, (h,)

    def normalized(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Like forward, but y in normalised units: what training losses are computed on."""
        return self.forward(x, state, normalized=True)

    def forward(self, x: torch.Tensor, state: State | None = None, *, normalized: bool = False) -> tuple[torch.Tensor, State]:
        """x (N, L, F) or (N, L) -> y (N, L, outputs) in the data's own units, and the new state.

        `normalized=True` skips the output de-normalisation (losses are computed there); it is a
        forward flag, not a method, so DistributedDataParallel sees the call.
        """
        out, state = self.features(x, state)
        y = self.head(out) if self.head is not None else out
        return (y if normalized else y * self.out_std + self.out_mean), state
