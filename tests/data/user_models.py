"""Ordinary PyTorch models as a new user writes them: what `edgernn export --module` is tried on.

Each class builds with its defaults; `make(name)` picks one by name (a factory, as --module
accepts). Tiny sizes so tests run fast.
"""

import torch
import torch.nn.functional as F
from torch import nn


class CharGRU(nn.Module):
    """Embedding -> GRU -> Linear: a character model."""

    def __init__(self, vocab=20, embed=8, hidden=16):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.rnn = nn.GRU(embed, hidden, batch_first=True)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, tokens):  # (N, T) int64
        y, _ = self.rnn(self.embed(tokens))
        return self.out(y)


class MLPLSTM(nn.Module):
    """A per-frame MLP (Linear + ReLU) -> LSTM -> Linear."""

    def __init__(self, features=6, hidden=16, outputs=3):
        super().__init__()
        self.frame = nn.Sequential(nn.Linear(features, 12), nn.ReLU(), nn.Dropout(0.1))
        self.lstm = nn.LSTM(12, hidden, batch_first=True)
        self.head = nn.Linear(hidden, outputs)

    def forward(self, x):
        y, _ = self.lstm(self.frame(x))
        return self.head(y)


class NormGRU(nn.Module):
    """LayerNorm over features -> GRU (2 layers) -> Linear."""

    def __init__(self, features=5, hidden=12, outputs=2):
        super().__init__()
        self.norm = nn.LayerNorm(features)
        self.gru = nn.GRU(features, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, outputs)

    def forward(self, x):
        return self.head(self.gru(self.norm(x))[0])


class Encoder(nn.Module):
    def __init__(self, features, hidden):
        super().__init__()
        self.rnn = nn.GRU(features, hidden, batch_first=True)
        self.proj = nn.Linear(hidden, hidden)

    def forward(self, x):
        return torch.tanh(self.proj(self.rnn(x)[0]))


class TwoRNNs(nn.Module):
    """GRU -> Linear -> LSTM: two recurrent layers in a row, one inside a submodule."""

    def __init__(self, features=4, hidden=12, outputs=3):
        super().__init__()
        self.encoder = Encoder(features, hidden)
        self.decoder = nn.LSTM(hidden, hidden, batch_first=True)
        self.head = nn.Linear(hidden, outputs)

    def forward(self, x):
        return self.head(self.decoder(self.encoder(x))[0])


class CausalConv(nn.Module):
    """Conv1d with padding (k-1)*d on both sides; the last (k-1)*d outputs are dropped."""

    def __init__(self, channels, out, kernel, dilation=1):
        super().__init__()
        self.trim = (kernel - 1) * dilation
        self.conv = nn.Conv1d(channels, out, kernel, padding=self.trim, dilation=dilation)

    def forward(self, x):  # (N, C, T)
        return self.conv(x)[:, :, :-self.trim]


class CRNN(nn.Module):
    """Causal Conv1d front end (two layers, one dilated, one left-padded by F.pad) -> LSTM."""

    def __init__(self, features=8, channels=10, hidden=16, outputs=4):
        super().__init__()
        self.conv1 = CausalConv(features, channels, kernel=3)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size=2, dilation=2)  # padded by forward
        self.lstm = nn.LSTM(channels, hidden, batch_first=True)
        self.head = nn.Linear(hidden, outputs)

    def forward(self, x):  # (N, T, F)
        h = F.relu(self.conv1(x.transpose(1, 2)))
        h = F.relu(self.conv2(F.pad(h, (2, 0))))
        y, _ = self.lstm(h.transpose(1, 2))
        return self.head(y)


class ProjLSTM(nn.Module):
    """An LSTM with proj_size (two layers) and a head."""

    def __init__(self, features=5, hidden=16, proj=6, outputs=2):
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, num_layers=2, proj_size=proj, batch_first=True)
        self.head = nn.Linear(proj, outputs)

    def forward(self, x):
        return self.head(self.lstm(x)[0])


class TimeMajor(nn.Module):
    """batch_first=False: forward takes x (T, N, F) and returns y (T, N, outputs)."""

    def __init__(self, features=4, hidden=12, outputs=3):
        super().__init__()
        self.lstm = nn.LSTM(features, hidden)
        self.head = nn.Linear(hidden, outputs)

    def forward(self, x):
        return self.head(self.lstm(x)[0])


class ReluRNN(nn.Module):
    """A plain RNN with nonlinearity='relu' (a state_dict alone cannot say so)."""

    def __init__(self, features=3, hidden=10, outputs=2):
        super().__init__()
        self.rnn = nn.RNN(features, hidden, nonlinearity="relu", batch_first=True)
        self.head = nn.Linear(hidden, outputs)

    def forward(self, x):
        return self.head(self.rnn(x)[0])


class LastStep(nn.Module):
    """Many-to-one: y [batch, outputs] from the last frame (a running prediction when streamed)."""

    def __init__(self, features=4, hidden=12, outputs=3):
        super().__init__()
        self.gru = nn.GRU(features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, outputs)

    def forward(self, x):
        return self.head(self.gru(x)[0][:, -1])


class BiGRU(nn.Module):
    """A bidirectional GRU and a head: offline, and streamed with bounded lookahead."""

    def __init__(self, features=4, hidden=8, outputs=3):
        super().__init__()
        self.gru = nn.GRU(features, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, outputs)

    def forward(self, x):
        return self.head(self.gru(x)[0])


class ConvBiLSTM(nn.Module):
    """A causal conv front end and a bidirectional LSTM: offline only."""

    def __init__(self, features=4, hidden=8, outputs=3):
        super().__init__()
        self.conv = CausalConv(features, 6, kernel=3)
        self.lstm = nn.LSTM(6, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, outputs)

    def forward(self, x):
        y, _ = self.lstm(self.conv(x.transpose(1, 2)).transpose(1, 2))
        return self.head(y)


class SameConvGRU(nn.Module):
    """Conv1d(padding='same') reads the future: not streamable."""

    def __init__(self, features=4, hidden=8, outputs=2):
        super().__init__()
        self.front = nn.Sequential()
        self.front.add_module("conv", nn.Conv1d(features, 6, 3, padding="same"))
        self.gru = nn.GRU(6, hidden, batch_first=True)
        self.head = nn.Linear(hidden, outputs)

    def forward(self, x):
        return self.head(self.gru(self.front(x.transpose(1, 2)).transpose(1, 2))[0])


class FlipGRU(nn.Module):
    """torch.flip over time in forward: not streamable."""

    def __init__(self, features=4, hidden=8, outputs=2):
        super().__init__()
        self.gru = nn.GRU(features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, outputs)

    def forward(self, x):
        return self.head(self.gru(torch.flip(x, [1]))[0])


class AttnGRU(nn.Module):
    """Self-attention over time after a GRU: not streamable."""

    def __init__(self, features=4, hidden=8, outputs=2):
        super().__init__()
        self.gru = nn.GRU(features, hidden, batch_first=True)
        self.attn = nn.MultiheadAttention(hidden, 2, batch_first=True)
        self.head = nn.Linear(hidden, outputs)

    def forward(self, x):
        h = self.gru(x)[0]
        return self.head(self.attn(h, h, h)[0])


MODELS = {c.__name__: c for c in (CharGRU, MLPLSTM, NormGRU, TwoRNNs, CRNN, ProjLSTM, TimeMajor, ReluRNN, LastStep,
                                  BiGRU, ConvBiLSTM, SameConvGRU, FlipGRU, AttnGRU)}


def make(name="CharGRU", seed=0, **kwargs):
    """A factory: the model called `name`, its weights drawn from `seed`."""
    torch.manual_seed(seed)
    return MODELS[name](**kwargs)
