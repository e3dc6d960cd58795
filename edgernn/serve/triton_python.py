"""A Triton model repository served by the python backend: edgernn's own streams inside Triton.

    write_repository("kws.onnx", "repo", backend="python")   # edgernn.serve.triton
    # repo/kws/config.pbtxt, repo/kws/1/model.py, repo/kws/1/model.onnx (the exported file as is)

The model (edgernn.serve.python_model) keeps each sequence's state by correlation id and steps
the requests of one model call as one `Batch` call, so no graph is rewritten and no state goes
through Triton. This is the variant a CPU-only Triton (the `tritonserver` in nvidia-pytriton,
which has only the python backend) can load; the onnxruntime variant (edgernn.serve.triton)
stays for GPU users on NGC images.

The server's Python must import edgernn, numpy < 2 (numpy 2 makes every output of this Triton's
python backend come back empty) and onnxruntime: `edgernn serve` arranges that
(edgernn.serve.server); on another Triton, `pip install --no-deps edgernn` beside them.
Torch-free.
"""

from __future__ import annotations

import json

from edgernn.core.errors import InputError

MODEL_PY = '''"""Triton python-backend entry point written by edgernn: see edgernn.serve.python_model."""
import os
import sys

# `edgernn serve` names the folder holding edgernn here (the stub's Python ignores PYTHONPATH);
# on another Triton, edgernn is installed in the server's Python and this is unset.
_path = os.environ.get("EDGERNN_SERVE_PATH")
if _path and _path not in sys.path:
    sys.path.insert(0, _path)

from edgernn.serve.python_model import TritonPythonModel  # noqa: E402,F401
'''


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(meta: dict, *, name: str, x_block: str, y_block: str, controls: str, max_batch_size: int = 64,
           idle_timeout_s: float = 60, instances: int = 1, kind: str = "cpu", max_sequences: int | None = None,
           queue_delay_us: int = 500) -> str:
    """config.pbtxt for the python backend. edgernn.serve.triton checks the options and renders the
    tensor and control blocks (x_block, y_block, controls), the same as for the onnxruntime variant."""
    if kind != "cpu":
        raise InputError("the python backend runs edgernn's CPU runtime; expected --triton-backend onnxruntime "
                         "for a GPU (--triton-gpu)")
    candidates = int(max_sequences or max(1024, 16 * int(max_batch_size)))  # live sequences served at once
    return f"""# Triton model configuration written by edgernn: a stateful RNN served by the python backend.
# Clients send frames x [1, T, F] (T = 1 per streaming step, or a chunk) with a sequence id and
# start/end flags; the model (edgernn.serve.python_model) keeps each sequence's state by its
# correlation id and steps all the requests of one model call in one batched edgernn call.
name: "{name}"
backend: "python"
max_batch_size: {int(max_batch_size)}
input [
{x_block}
]
output [
{y_block}
]
sequence_batching {{
  # A sequence silent this long is dropped by Triton, and its state by the model.
  max_sequence_idle_microseconds: {round(idle_timeout_s * 1e6)}
  # "oldest": each model call takes the oldest pending request of up to max_candidate_sequences
  # live sequences (never two of one sequence); the delay bounds the wait for a fuller batch.
  oldest {{
    max_candidate_sequences: {candidates}
    preferred_batch_size: [ {int(max_batch_size)} ]
    max_queue_delay_microseconds: {int(queue_delay_us)}
  }}
  # START zeroes the sequence's state, END frees it after the step, CORRID keys it.
  control_input [
{controls}
  ]
}}
instance_group [
  {{
    count: {int(instances)}
    kind: KIND_CPU
  }}
]
# The edgernn metadata of the served file, for clients (labels, frame size, front end).
parameters [
  {{
    key: "edgernn"
    value: {{ string_value: "{_escape(json.dumps(meta, separators=(',', ':')))}" }}
  }}
]
"""
