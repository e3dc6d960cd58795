"""Ensembles: several classifiers of one shape that vote as one model, in one checkpoint.

    checkpoint.save_ensemble(["a.pt", "b.pt"], "kws.pt")  # what `edgernn ensemble a.pt b.pt -o kws.pt` does
    loaded = checkpoint.load("kws.pt")             # loaded.model is an Ensemble: export/verify/info take it

The members run side by side on the same frames; `y` is the mean of their log-posteriors (the
geometric mean of their class probabilities, up to normalisation: softmax(y) is a distribution).
A class wins only where every member gives it weight, so one member's false alarm is damped by
the others: for keyword spotting that cuts false events more than it costs hits. The members'
states are stacked along the first axis, so the exported file keeps the contract's one
`h0 -> hn` pair (`[sum of layers, batch, hidden]`) and streams like any other.

Members must agree on what goes in and comes out: the same cell, hidden size, features (or
vocabulary), classes in the same order, front end and readout; layers and training may differ.
"""

from __future__ import annotations

import torch
from torch import nn

from edgernn.core.errors import InputError
from edgernn.core.spec import ModelSpec
from edgernn.train.models import RNNModel

FORMAT = "edgernn-ensemble/1"
COMBINE = "geometric"  # y = mean over members of log_softmax(y_member)
_SAME = ("cell", "hidden", "features", "vocab", "outputs", "readout", "task", "bidirectional")


class Ensemble(nn.Module):
    """The members as one model with RNNModel's interface: spec, zero_state, forward(x, state)."""

    def __init__(self, members: list[RNNModel]):
        super().__init__()
        self.members = nn.ModuleList(members)
        first = members[0].spec
        self.layer_counts = [m.spec.layers for m in members]
        self.spec = ModelSpec(cell=first.cell, features=first.features, vocab=first.vocab, hidden=first.hidden,
                              layers=sum(self.layer_counts), outputs=first.outputs, readout=first.readout,
                              task=first.task, embed=first.embed if first.vocab else 0)
        # Parity feeds raw-unit inputs scaled by these: the first member's, as the data's.
        self.register_buffer("in_mean", members[0].in_mean.clone())
        self.register_buffer("in_std", members[0].in_std.clone())
        self.register_buffer("out_mean", torch.zeros(first.outputs))
        self.register_buffer("out_std", torch.ones(first.outputs))

    def zero_state(self, batch: int):
        return tuple(torch.cat(parts, 0) for parts in zip(*(m.zero_state(batch) for m in self.members)))

    def forward(self, x: torch.Tensor, state=None, *, normalized: bool = False):
        """x (N, L, F) -> y (N, L, classes): the members' mean log-posterior; the stacked state.
        `normalized` is RNNModel's flag, accepted for its interface: y has no output scaling."""
        state = self.zero_state(x.shape[0]) if state is None else state
        split = [torch.split(s, self.layer_counts, dim=0) for s in state]
        ys, states = [], []
        for k, m in enumerate(self.members):
            y, st = m(x, tuple(s[k] for s in split))
            ys.append(torch.log_softmax(y, dim=-1))
            states.append(st)
        y = torch.stack(ys, 0).mean(0)
        return y, tuple(torch.cat(parts, 0) for parts in zip(*states))


def check_members(loaded: list, names: list[str]) -> None:
    """Refuse, in one line naming the member, anything that cannot vote with the first one."""
    if len(loaded) < 2:
        raise InputError(f"an ensemble of {len(loaded)} model; expected two or more checkpoints")
    first, name0 = loaded[0], names[0]
    for lo, name in zip(loaded, names):
        if lo.kind != "checkpoint" or lo.extra.get("format") == FORMAT:
            raise InputError(f"{name}: not a checkpoint of one model; expected the -o file of `edgernn train`")
        if lo.model.spec.task != "classify" or not lo.labels:
            raise InputError(f"{name}: a {lo.model.spec.task} model; expected classifiers (task classify, with labels): "
                             "an ensemble averages class posteriors")
        if lo.model.spec.bidirectional:
            raise InputError(f"{name}: a bidirectional model; expected one-directional (streaming) classifiers")
    for lo, name in zip(loaded[1:], names[1:]):
        a, b = first.model.spec, lo.model.spec
        for key in _SAME:
            if getattr(a, key) != getattr(b, key):
                raise InputError(f"{name}: {key} {getattr(b, key)!r} but {name0} has {getattr(a, key)!r}; "
                                 f"expected members that agree on {', '.join(_SAME)}")
        if list(lo.labels) != list(first.labels):
            raise InputError(f"{name}: labels {list(lo.labels)} but {name0} has {list(first.labels)}; "
                             "expected the same classes in the same order")
        if lo.frontend != first.frontend:
            raise InputError(f"{name}: front end {lo.frontend} but {name0} has {first.frontend}; "
                             "expected members trained on the same features")


def summary(ckpt: dict) -> dict:
    """What the exported file's metadata says of the ensemble (`ensemble`)."""
    return {"combine": ckpt.get("combine", COMBINE),
            "members": [{"spec": m.get("spec"), "metrics": m.get("metrics") or None} for m in ckpt["members"]]}
