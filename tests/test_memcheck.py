"""The C-API session under a memory checker: valgrind watches a process that opens models with
long symbolic dim names (the names onnxruntime hands back live inside its type info), reads their
inputs and outputs many times and streams through bound buffers. Any invalid read, write or free
reached through ctypes or onnxruntime fails the test.

The dynamic loader's own reports (glibc's dl-load reads a word past short strings) are not ours;
only errors whose stack passes through ctypes/libffi/onnxruntime count. A positive control (a
deliberate read of freed memory through ctypes) proves the filter sees what it must see.
"""

import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

LONG = "Reshapespeech_probs_dim_0_of_a_torch_export"  # torch writes names like this one

HARNESS = f"""
import numpy as np
from edgernn.runtime.native import NativeSession, open_session
from edgernn.runtime import Runtime
for _ in range(30):
    s = open_session("m.onnx")
    assert isinstance(s, NativeSession)
    assert [a.shape for a in s.get_inputs()] == [[{LONG!r}, 4], [1, {LONG!r}, 4]], s.get_inputs()
    assert [a.shape for a in s.get_outputs()][0] == [{LONG!r}, 4]
rt = Runtime("m.onnx", states={{"h0": "hn"}})
st = rt.stream()
for _ in range(20):
    y = st.step(np.ones(4, np.float32))
assert st.bound and np.isfinite(y).all()
b = rt.batch()
ids = [b.open() for _ in range(3)]
for _ in range(5):
    b.step({{i: np.ones(4, np.float32) for i in ids}})
print("harness ok")
"""

CONTROL = """
import ctypes
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
p = libc.malloc(64)
ctypes.memset(p, 65, 63); ctypes.memset(p + 63, 0, 1)
libc.free(p)
print(len(ctypes.string_at(p)) >= 0)
"""

_ERROR = re.compile(r"^==\d+== (Invalid (read|write|free)|Mismatched free)")


def _model(path):
    f = TensorProto.FLOAT
    nodes = [helper.make_node("Unsqueeze", ["x", "zero"], ["xu"]), helper.make_node("Add", ["xu", "h0"], ["s"]),
             helper.make_node("Tanh", ["s"], ["hn"]), helper.make_node("Squeeze", ["hn", "zero"], ["y"])]
    graph = helper.make_graph(nodes, "long_names",
                              [helper.make_tensor_value_info("x", f, [LONG, 4]),
                               helper.make_tensor_value_info("h0", f, [1, LONG, 4])],
                              [helper.make_tensor_value_info("y", f, [LONG, 4]),
                               helper.make_tensor_value_info("hn", f, [1, LONG, 4])],
                              initializer=[helper.make_tensor("zero", TensorProto.INT64, [1], [0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _ours(log: str) -> list[str]:
    """Error blocks reached through ctypes, libffi or onnxruntime."""
    blocks, current = [], None
    for line in log.splitlines():
        if _ERROR.match(line):
            current = [line]
            blocks.append(current)
        elif current is not None:
            if re.match(r"^==\d+== *$", line):
                current = None
            else:
                current.append(line)
    return ["\n".join(b) for b in blocks if re.search(r"_ctypes|libffi|onnxruntime", "\n".join(b))]


def _valgrind(tmp_path, code: str, name: str):
    assert shutil.which("valgrind"), "valgrind is needed for the memory check (apt-get install valgrind)"
    script, log = tmp_path / f"{name}.py", tmp_path / f"{name}.log"
    script.write_text(code)
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONMALLOC="malloc", EDGERNN_NATIVE="1")
    r = subprocess.run(["valgrind", "--error-limit=no", f"--log-file={log}", sys.executable, str(script)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    return r, log.read_text()


def test_the_c_api_session_has_no_invalid_memory_access(tmp_path):
    _model(tmp_path / "m.onnx")
    r, log = _valgrind(tmp_path, HARNESS, "harness")
    assert r.returncode == 0 and "harness ok" in r.stdout, r.stderr[-2000:]
    errors = _ours(log)
    assert not errors, "\n\n".join(errors[:3])


def test_the_check_sees_a_read_of_freed_memory(tmp_path):
    r, log = _valgrind(tmp_path, CONTROL, "control")
    assert r.returncode == 0, r.stderr[-2000:]
    assert _ours(log), "valgrind's log shows no invalid read for a deliberate use-after-free:\n" + log[-2000:]
