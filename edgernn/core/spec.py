"""The shape of a model: a frozen dataclass, torch-free, stored in checkpoints and metadata."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from edgernn.core.errors import InputError

CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru")
READOUTS = ("every", "last")
TASKS = ("classify", "regress", "lm")
GATES = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model: input → (embedding | projection) → RNN → head.

    Shape legend used across edgernn: N batch, L length (time), D directions, H hidden.
    """

    cell: str = "lstm"  # one of CELLS
    features: int = 1  # input features per step; ignored for token models (vocab > 0)
    vocab: int = 0  # > 0: the input is int64 token ids, embedded to `embed` wide
    embed: int = 0  # embedding width (token models) or input projection width; 0 = none
    hidden: int = 64  # hidden units per direction
    layers: int = 1  # stacked recurrent layers
    bidirectional: bool = False  # reads the future: offline, or streamed with lookahead
    dropout: float = 0.0  # between recurrent layers, training only
    outputs: int = 1  # head width (classes, vocabulary, or regression targets)
    head: bool = True  # False: y is the last layer's hidden output (outputs = D*H)
    readout: str = "every"  # "last": many-to-one, trained on the final step only
    task: str = "regress"  # classify | regress | lm: how y is read (softmax or values)

    def __post_init__(self):
        def bad(what, want):
            raise InputError(f"model spec: {what}; expected {want}")

        if self.cell not in CELLS:
            bad(f"cell {self.cell!r}", "one of " + ", ".join(CELLS))
        for name in ("hidden", "layers", "outputs"):
            if int(getattr(self, name)) < 1:
                bad(f"{name}={getattr(self, name)}", "a positive integer")
        if self.vocab < 0 or self.embed < 0 or self.features < 1:
            bad(f"vocab={self.vocab}, embed={self.embed}, features={self.features}",
                "vocab >= 0, embed >= 0, features >= 1")
        if self.vocab and not self.embed:
            bad("a token model (vocab > 0) without an embedding width", "embed > 0")
        if not 0.0 <= self.dropout < 1.0:
            bad(f"dropout={self.dropout}", "0 <= dropout < 1")
        if self.readout not in READOUTS:
            bad(f"readout {self.readout!r}", "every or last")
        if self.task not in TASKS:
            bad(f"task {self.task!r}", "one of " + ", ".join(TASKS))
        if not self.head and self.outputs != self.directions * self.hidden:
            bad(f"outputs={self.outputs} without a head", f"outputs = {self.directions * self.hidden}")

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def gates(self) -> int:
        return GATES[self.cell]

    @property
    def rnn_input(self) -> int:
        """Width of the first recurrent layer's input."""
        return self.embed or self.features

    @property
    def state_shape(self) -> tuple[int, int]:
        """(layers*directions, hidden): each state is this with batch in the middle."""
        return (self.layers * self.directions, self.hidden)

    @property
    def state_names(self) -> tuple[tuple[str, str], ...]:
        """(input, output) pairs of the recurrent state, as the contract names them."""
        return (("h0", "hn"), ("c0", "cn")) if self.cell == "lstm" else (("h0", "hn"),)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise InputError(f"model spec has unknown keys {sorted(unknown)}; expected some of {sorted(known)}")
        return cls(**d)
