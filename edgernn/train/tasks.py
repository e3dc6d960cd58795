"""The data of each training task, in numpy: batches to learn from, a metric, and a baseline.

A task exposes: `spec_args` (features, outputs, readout, task kind), `loss` ("mse" | "ce"),
`batch(rng, n) -> (x, y)` in normalised units, `evaluate(predict) -> (value, baseline)`, and
`checkpoint_info()` for what the exported model must carry (normalisation, labels, front end).

By name (what `edgernn train --task` maps its options onto): DEFAULTS, make(name, ...) -> the task,
model_spec(name, task, ...) -> the ModelSpec to train.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from edgernn.runtime import sources
from edgernn.core.errors import InputError
from edgernn.core.wording import plural
from edgernn.core.spec import ModelSpec


def bundled(name: str) -> Path:
    """Path of a data file shipped inside the package (edgernn/data/)."""
    return Path(str(resources.files("edgernn") / "data" / name))


class AddingTask:
    """The adding problem (Hochreiter & Schmidhuber 1997): many-to-one regression.

    Each step carries (value ~ U(0,1), marker); exactly two markers are 1, one in each half of
    the sequence, and the target is the sum of the two marked values. Predicting the mean (1.0)
    scores MSE = Var(U+U) = 1/6 ≈ 0.167: the baseline.
    """

    metric = "mse"
    loss = "mse"

    def __init__(self, seq_len: int = 50, *, val_size: int = 2000, seed: int = 0):
        if seq_len < 2:
            raise InputError(f"--seq-len {seq_len}; expected at least 2")
        self.seq_len = seq_len
        self.name = "adding"
        self.spec_args = {"features": 2, "outputs": 1, "readout": "last", "task": "regress"}
        self.val = self.batch(np.random.default_rng(10_000 + seed), val_size)

    def batch(self, rng: np.random.Generator, n: int):
        t = self.seq_len
        x = np.zeros((n, t, 2), np.float32)
        x[:, :, 0] = rng.random((n, t))
        first = rng.integers(0, t // 2, n)
        second = rng.integers(t // 2, t, n)
        rows = np.arange(n)
        x[rows, first, 1] = 1.0
        x[rows, second, 1] = 1.0
        y = (x[rows, first, 0] + x[rows, second, 0])[:, None]  # (N, 1)
        return x, y.astype(np.float32)

    def evaluate(self, predict):
        x, y = self.val
        p = predict(x)[:, -1]  # (N, 1): the prediction after the last step
        return float(np.mean((p - y) ** 2)), float(np.mean((y - 1.0) ** 2))

    def checkpoint_info(self) -> dict:
        return {"task": {"name": "adding", "seq_len": self.seq_len}}


class ForecastTask:
    """Next-value forecasting of a real series, many-to-many: from x[..t] predict x[t+horizon].

    The series is split in time three ways: training (the first 70 %), validation (the next
    `val_frac`, which picks the checkpoint and stops training early) and test (the last
    `test_frac`, scored once at the end and never used to choose anything). The model reads the
    series from the start (its state warms up on the past, as it would live) and is scored on
    the held-out targets only. The baseline is persistence: predict that x[t+horizon] = x[t].
    """

    metric = "rmse"
    loss = "mse"

    def __init__(self, csv, column: str | None = None, *, horizon: int = 1, window: int = 64,
                 val_frac: float = 0.15, test_frac: float = 0.15):
        series = _read_series(csv, column)
        if horizon < 1:
            raise InputError(f"--horizon {horizon}; expected at least 1")
        n = len(series)
        split = int(round(n * (1 - val_frac - test_frac)))
        test_at = int(round(n * (1 - test_frac)))
        if split - horizon < 8 or test_at - split < horizon + 1 or n - test_at < horizon + 1:
            raise InputError(f"{csv}: {plural(n, 'value')} {'is' if n == 1 else 'are'} too few for horizon "
                             f"{horizon}; expected at least {int(np.ceil((16 + 2 * horizon) / min(val_frac, test_frac)))}")
        self.name, self.csv, self.column, self.horizon = "forecast", str(csv), column, horizon
        self.series, self.split, self.test_at = series, split, test_at
        train = series[:split]
        self.mean, self.std = float(train.mean()), float(train.std() or 1.0)
        self.window = min(window, split - horizon)
        self.spec_args = {"features": 1, "outputs": 1, "readout": "every", "task": "regress"}

    @property
    def normalization(self) -> dict:
        return {"in_mean": [self.mean], "in_std": [self.std], "out_mean": [self.mean], "out_std": [self.std]}

    def batch(self, rng: np.random.Generator, n: int):
        """Random windows of the training part, in raw units: (N, W, 1) -> (N, W, 1)."""
        w, h = self.window, self.horizon
        start = rng.integers(0, self.split - h - w + 1, n)
        idx = start[:, None] + np.arange(w)
        return self.series[idx][..., None], self.series[idx + h][..., None]

    def _score(self, predict, first: int, end: int) -> tuple[float, float]:
        """RMSE of the forecasts whose targets lie in [first, end), and persistence's."""
        s, h = self.series, self.horizon
        p = predict(s[None, : len(s) - h, None])[0, :, 0]  # p[t] forecasts s[t+h]
        t = np.arange(first - h, end - h)
        rmse = float(np.sqrt(np.mean((p[t] - s[t + h]) ** 2)))
        persistence = float(np.sqrt(np.mean((s[t] - s[t + h]) ** 2)))
        return rmse, persistence

    def evaluate(self, predict):
        """Validation: picks the checkpoint."""
        return self._score(predict, self.split, self.test_at)

    def test(self, predict):
        """The test part, scored once on the chosen checkpoint."""
        return self._score(predict, self.test_at, len(self.series))

    def checkpoint_info(self) -> dict:
        return {"task": {"name": "forecast", "csv": Path(self.csv).name, "column": self.column,
                         "horizon": self.horizon, "split": self.split, "test_from": self.test_at}}


def _read_series(csv, column: str | None) -> np.ndarray:
    a = sources.read_csv(csv, columns=[column] if column else None)
    if a.shape[1] != 1:
        raise InputError(f"{csv}: {plural(a.shape[1], 'column')}; expected one series: name it with --column")
    return a[:, 0].astype(np.float32)


class CharLMTask:
    """Character language model, many-to-many over one long text, trained with truncated BPTT.

    The training text is cut into `n` parallel streams read in consecutive segments of
    `tbptt` characters; the state is carried from one segment to the next (and detached), so
    the model learns dependencies longer than a segment. Metric: bits per character on the
    held-out tail of the text; baseline: the unigram (character frequency) model.
    """

    metric = "bits_per_char"
    loss = "ce"

    def __init__(self, text_path, *, tbptt: int = 100, val_frac: float = 0.1):
        path = Path(text_path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InputError(f"{path}: no such file; expected a UTF-8 text file") from None
        except UnicodeDecodeError as e:
            raise InputError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); expected a UTF-8 text file") from None
        if tbptt < 2:
            raise InputError(f"--tbptt {tbptt}; expected at least 2")
        split = int(len(text) * (1 - val_frac))
        if split < 2 * tbptt + 1 or len(text) - split < tbptt + 1:
            raise InputError(f"{path}: {len(text)} characters is shorter than two segments of --tbptt {tbptt} plus a "
                             f"held-out part; expected at least {int((2 * tbptt + 2) / (1 - val_frac)) + tbptt} characters")
        self.name, self.path, self.tbptt = "charlm", str(path), tbptt
        self.tokens = sorted(set(text[:split]))  # id -> character; unseen characters map to the first
        index = {c: i for i, c in enumerate(self.tokens)}
        ids = np.array([index.get(c, 0) for c in text], np.int64)
        self.train_ids, self.val_ids = ids[:split], ids[split:]
        self.spec_args = {"vocab": len(self.tokens), "outputs": len(self.tokens), "readout": "every", "task": "lm"}
        self.labels = None
        counts = np.bincount(self.train_ids, minlength=len(self.tokens)) + 1.0  # add-one: no infinite surprise
        self.unigram_bits = float(-np.mean(np.log2((counts / counts.sum())[self.val_ids])))

    def segments(self, rng: np.random.Generator, n: int):
        """Endless (x, y, fresh) segments for n parallel streams; fresh=True means reset the state."""
        per = len(self.train_ids) // n
        if per < self.tbptt + 1:
            raise InputError(f"{self.path}: {len(self.train_ids)} training characters cannot feed {n} streams of "
                             f"--tbptt {self.tbptt}; expected a smaller --batch-size or --tbptt")
        while True:
            offset = int(rng.integers(0, per - self.tbptt))  # a new phase each pass over the text
            starts = offset + np.arange(n) * per
            for i, pos in enumerate(range(0, per - offset - self.tbptt, self.tbptt)):
                idx = starts[:, None] + pos + np.arange(self.tbptt + 1)
                idx = np.minimum(idx, len(self.train_ids) - 1)
                chunk = self.train_ids[idx]
                yield chunk[:, :-1], chunk[:, 1:], i == 0

    def evaluate(self, predict):
        logits = predict(self.val_ids[None, :-1])[0]  # (L, V): one pass over the held-out text
        logits = logits - logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        nll = -logp[np.arange(len(logp)), self.val_ids[1:]]
        return float(nll.mean() / np.log(2)), self.unigram_bits

    def checkpoint_info(self) -> dict:
        return {"task": {"name": "charlm", "text": Path(self.path).name, "tbptt": self.tbptt},
                "tokens": self.tokens}


# ---------------------------------------------------------------- the tasks by name (`edgernn train --task`)

DEFAULTS = {  # what a run of each task uses unless told otherwise: model size and training options
    "adding": {"hidden": 64, "steps": 2000, "batch_size": 64, "lr": 3e-3},
    # forecast: 309 yearly values; a wider model (32) fits the training years by step 100 and then
    # overfits, an 8-unit LSTM improves on validation to step ~1100; early stop after 5 flat validations
    "forecast": {"hidden": 8, "steps": 1500, "batch_size": 32, "lr": 3e-3, "patience": 5},
    "charlm": {"hidden": 128, "steps": 1000, "batch_size": 32, "lr": 3e-3, "embed": 32},
    "classify": {"hidden": 96, "steps": 2000, "batch_size": 64, "lr": 1e-2, "cell": "gru", "clip": 5.0},
}
NAMES = (*DEFAULTS, "seq2seq")  # seq2seq trains an encoder and a decoder: edgernn.train.seq2seq, its own defaults
SEQ2SEQ = {"cell": "gru", "hidden": 128}  # edgernn.train.seq2seq.TASK_DEFAULTS (torch): tests keep the two equal


def default_cells() -> dict:
    """Each task's recurrent cell when --cell is not given (what `train --help` states)."""
    return {**{k: d.get("cell", "lstm") for k, d in DEFAULTS.items()}, "seq2seq": SEQ2SEQ["cell"]}


def default_hidden() -> dict:
    return {**{k: d["hidden"] for k, d in DEFAULTS.items()}, "seq2seq": SEQ2SEQ["hidden"]}


def make(name: str, *, seed: int = 0, bidirectional: bool = False, seq_len: int = 50, csv=None,
         column: str | None = None, horizon: int = 1, text=None, tbptt: int = 100, data=None, phases: int = 1):
    """The task object for `name` (a key of DEFAULTS), from the options that apply to it.
    csv/column: forecast (default: the bundled sunspots); text: charlm (default: bundled Genesis);
    data: classify (a folder of one subfolder of WAV files per class); phases: classify's
    sub-hop framings of each training clip (ClassifyTask)."""
    if name == "adding":
        return AddingTask(seq_len, seed=seed)
    if name == "forecast":
        if bidirectional:
            raise InputError("--bidirectional with --task forecast would read the very values it predicts; "
                             "expected a unidirectional model for forecasting")
        if csv is None:
            csv, column = bundled("sunspots.csv"), column or "SUNACTIVITY"
        return ForecastTask(csv, column, horizon=horizon)
    if name == "charlm":
        if bidirectional:
            raise InputError("--bidirectional with --task charlm would read the next character it predicts; "
                             "expected a unidirectional model")
        return CharLMTask(text or bundled("genesis.txt"), tbptt=tbptt)
    if name == "classify":
        from edgernn.train.classify import ClassifyTask

        if not data:
            raise InputError("--task classify needs --data DIR: a folder with one subfolder of WAV files per class")
        # a label holds up to 1 s after its word; formants moved by up to 20 %, as between speakers
        return ClassifyTask(data, seed=seed, trailing=1.0, warp=0.2, phases=phases)
    raise InputError(f"task {name!r}; expected one of {', '.join(DEFAULTS)} (seq2seq: edgernn.train.seq2seq)")


def model_spec(name: str, task, *, cell: str | None = None, hidden: int | None = None, layers: int = 1,
               bidirectional: bool = False, dropout: float = 0.0):
    """The ModelSpec a run of task `name` trains: the given options, else the task's defaults;
    the task object supplies features, outputs, readout and vocabulary (an embedding if it has one)."""
    d = DEFAULTS[name]
    embed = d.get("embed", 0) if task.spec_args.get("vocab") else 0
    return ModelSpec(cell=cell or d.get("cell", "lstm"), hidden=hidden or d["hidden"], layers=layers,
                     bidirectional=bidirectional, dropout=dropout, embed=embed, **task.spec_args)
