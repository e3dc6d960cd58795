"""Three models as you might write them, for docs/your-own-model.md.

    python docs/examples/my_models.py        # writes char.pt, crnn.pt, stacked.pt, centered.pt here

Each file is a plain state_dict (torch.save(model.state_dict(), ...)); `edgernn export FILE.pt
--module docs/examples/my_models.py:NAME` rebuilds the model from this code and exports it.
"""

import torch
import torch.nn.functional as F
from torch import nn


class CharModel(nn.Module):
    """A character model: token ids (N, T) -> next-character logits (N, T, vocab)."""

    def __init__(self, vocab=64, embed=16, hidden=64):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.rnn = nn.GRU(embed, hidden, num_layers=2, batch_first=True)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, tokens):
        y, _ = self.rnn(self.embed(tokens))
        return self.out(y)


class CausalConv1d(nn.Conv1d):
    """A Conv1d that only looks back: pad (k-1)*d on both sides, drop the last (k-1)*d outputs."""

    def __init__(self, cin, cout, kernel, dilation=1):
        super().__init__(cin, cout, kernel, padding=(kernel - 1) * dilation, dilation=dilation)
        self.trim = (kernel - 1) * dilation

    def forward(self, x):  # (N, C, T)
        return super().forward(x)[:, :, :-self.trim]


class CRNN(nn.Module):
    """Log-mel frames (N, T, 40) -> a causal conv front end -> LSTM -> per-frame class scores."""

    def __init__(self, features=40, channels=32, hidden=64, classes=5):
        super().__init__()
        self.front = nn.Sequential(CausalConv1d(features, channels, 5), nn.ReLU(),
                                   CausalConv1d(channels, channels, 3, dilation=2), nn.ReLU())
        self.norm = nn.LayerNorm(channels)
        self.lstm = nn.LSTM(channels, hidden, batch_first=True)
        self.classify = nn.Linear(hidden, classes)

    def forward(self, x):
        h = self.front(x.transpose(1, 2)).transpose(1, 2)  # (N, T, channels)
        y, _ = self.lstm(self.norm(h))
        return self.classify(y)


class Stacked(nn.Module):
    """Two RNNs in a row: a GRU encoder with its own projection, then an LSTM, then a head."""

    def __init__(self, features=8, hidden=32, outputs=2):
        super().__init__()
        self.encoder = nn.ModuleDict({"rnn": nn.GRU(features, hidden, batch_first=True),
                                      "proj": nn.Linear(hidden, hidden)})
        self.decoder = nn.LSTM(hidden, hidden, batch_first=True)
        self.head = nn.Linear(hidden, outputs)

    def forward(self, x):
        h, _ = self.encoder["rnn"](x)
        h = F.gelu(self.encoder["proj"](h))
        y, _ = self.decoder(h)
        return self.head(y)


class Centered(nn.Module):
    """The same idea with padding='same': each output sees the next frames too. Not streamable."""

    def __init__(self, features=40, hidden=64, classes=5):
        super().__init__()
        self.conv = nn.Conv1d(features, 32, 5, padding="same")
        self.lstm = nn.LSTM(32, hidden, batch_first=True)
        self.classify = nn.Linear(hidden, classes)

    def forward(self, x):
        y, _ = self.lstm(torch.relu(self.conv(x.transpose(1, 2))).transpose(1, 2))
        return self.classify(y)


if __name__ == "__main__":
    torch.manual_seed(0)
    for name, model in (("char", CharModel()), ("crnn", CRNN()), ("stacked", Stacked()), ("centered", Centered())):
        torch.save(model.state_dict(), f"{name}.pt")
        print(f"wrote {name}.pt ({type(model).__name__}, {sum(p.numel() for p in model.parameters())} parameters)")
