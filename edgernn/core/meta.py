"""The `edgernn` metadata schema: written by the exporter, read by the runtime. Torch-free.

The JSON lives under one `metadata_props` key so that any onnxruntime user can read it with
`InferenceSession.get_modelmeta().custom_metadata_map["edgernn"]`.
"""

from __future__ import annotations

import json

from edgernn.core.errors import ModelFileError
from edgernn.core.spec import ModelSpec

KEY = "edgernn"
FORMAT = 1
REQUIRED = ("format", "input", "output", "states", "model", "frontend", "normalize", "export")


def build(spec: ModelSpec, *, labels=None, frontend=None, normalize=None, export=None, **extra) -> dict:
    """The metadata dict for a model of `spec` (docs/contract.md says what each key means)."""
    d, n = spec.state_shape
    token = spec.vocab > 0
    meta = {
        "format": FORMAT,
        "input": {"name": "x", "dtype": "int64" if token else "float32",
                  "features": None if token else spec.features, "vocab": spec.vocab or None},
        "output": {"name": "y", "size": spec.outputs, "readout": spec.readout,
                   "labels": list(labels) if labels is not None else None},
        "states": [{"input": i, "output": o, "shape": [d, "batch", n], "batch_axis": 1}
                   for i, o in spec.state_names],
        "model": {"cell": spec.cell, "layers": spec.layers, "hidden": spec.hidden,
                  "bidirectional": spec.bidirectional, "task": spec.task, "spec": spec.to_dict()},
        "frontend": frontend,
        "normalize": normalize,
        "export": export or {},
    }
    meta.update(extra)
    return meta


def dumps(meta: dict) -> str:
    return json.dumps(meta, separators=(",", ":"), sort_keys=False)


def parse(text: str, *, source: str = "model") -> dict:
    """Parse and check the JSON; raise ModelFileError naming what is wrong."""
    try:
        meta = json.loads(text)
    except RecursionError as e:
        raise ModelFileError(f"{source}: the '{KEY}' metadata is nested too deeply to be real; "
                             "re-export the model with `edgernn export`") from e
    except (TypeError, ValueError) as e:
        raise ModelFileError(f"{source}: the '{KEY}' metadata is not valid JSON ({e}); "
                             "re-export the model with `edgernn export`") from e
    if not isinstance(meta, dict):
        raise ModelFileError(f"{source}: the '{KEY}' metadata is a {type(meta).__name__}; expected a JSON object")
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise ModelFileError(f"{source}: the '{KEY}' metadata lacks {missing}; expected keys {list(REQUIRED)}")
    fmt = meta["format"]
    if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt < 1:
        raise ModelFileError(f"{source}: metadata format {fmt!r}; expected an integer >= 1")
    if fmt > FORMAT:
        raise ModelFileError(f"{source}: metadata format {fmt} was written by a newer edgernn; "
                             f"this one reads format {FORMAT}: upgrade edgernn")
    _check_io(meta, source)
    return meta


def _check_io(meta: dict, source: str) -> None:
    def need(ok: bool, what: str):
        if not ok:
            raise ModelFileError(f"{source}: metadata {what}")

    inp, out, states = meta["input"], meta["output"], meta["states"]
    need(isinstance(inp, dict) and isinstance(inp.get("name"), str), "'input' needs a 'name' string")
    need(inp.get("dtype") in ("float32", "int64"), f"input dtype {inp.get('dtype')!r}; expected float32 or int64")
    need(isinstance(out, dict) and isinstance(out.get("name"), str), "'output' needs a 'name' string")
    need(out.get("readout", "every") in ("every", "last"), "output readout must be 'every' or 'last'")
    need(isinstance(states, list), "'states' must be a list of {input, output, shape, batch_axis}")
    for s in states:
        need(isinstance(s, dict) and isinstance(s.get("input"), str) and isinstance(s.get("output"), str),
             f"state entry {s!r} needs 'input' and 'output' names")
        need(isinstance(s.get("shape"), list) and all(isinstance(d, (int, str)) and not isinstance(d, bool)
                                                      for d in s["shape"])
             and isinstance(s.get("batch_axis"), int) and not isinstance(s.get("batch_axis"), bool),
             f"state {s.get('input')!r} needs a 'shape' list of sizes and an integer 'batch_axis'")
    need(isinstance(meta["model"], dict), f"'model' is a {type(meta['model']).__name__}; expected an object")
    need(isinstance(meta["export"], dict), f"'export' is a {type(meta['export']).__name__}; expected an object")
    need(meta["normalize"] is None or isinstance(meta["normalize"], dict), "'normalize' must be null or an object")
    fe = meta["frontend"]
    need(fe is None or (isinstance(fe, dict) and isinstance(fe.get("kind"), str)),
         "'frontend' must be null or an object with a 'kind'")
    if isinstance(fe, dict) and fe.get("kind") == "logmel":
        missing = [k for k in ("sample_rate", "window", "hop", "mels") if k not in fe]
        need(not missing, f"logmel frontend lacks {missing}")
    feats = inp.get("features")
    need(feats is None or (isinstance(feats, int) and not isinstance(feats, bool) and feats > 0),
         f"input features {feats!r}; expected a positive integer or null")
    labels = out.get("labels")
    need(labels is None or (isinstance(labels, list) and all(isinstance(x, str) for x in labels)),
         "'labels' must be null or a list of strings")
    if labels is not None and isinstance(out.get("size"), int):
        need(len(labels) == out["size"], f"has {len(labels)} labels for {out['size']} outputs")
