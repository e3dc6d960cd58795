"""Is onnxruntime's own (Python) IO binding as fast as edgernn's C-API step? One stream stepped
three ways on the same file, rounds interleaved (edgernn.runtime.bench.measure):

    python tools/iobinding_bench.py [MODEL.onnx]      # default: models/kws.onnx

- edgernn: `Stream.step` (the C-API state loop, edgernn.runtime.stateloop);
- iobinding: the Python binding's IO binding, two bindings ping-ponging preallocated OrtValues,
  the frame written into a bound numpy buffer, `run_with_iobinding` (its public form);
- iobinding private: the same through `session._sess.run_with_iobinding` (no Python wrapper).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]


def iobinding_loop(path, rt, frames, private: bool):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"], sess_options=_options())
    sig = rt.signature
    zero = rt.zero_state(1)
    sets = [{k: ort.OrtValue.ortvalue_from_numpy(v.copy()) for k, v in zero.items()} for _ in (0, 1)]
    xbuf = np.zeros(rt.frame_call_shape, sig.dtype)
    y0 = sess.run([sig.y], {sig.x: xbuf, **zero, **sig.constants})[0]
    ybuf = np.zeros_like(y0)
    xv, yv = ort.OrtValue.ortvalue_from_numpy(xbuf), ort.OrtValue.ortvalue_from_numpy(ybuf)
    bindings = []
    for k in (0, 1):
        b = sess.io_binding()
        b.bind_ortvalue_input(sig.x, xv)
        for name, value in sig.constants.items():
            b.bind_cpu_input(name, np.ascontiguousarray(value))
        for p in sig.states:
            b.bind_ortvalue_input(p.input, sets[k][p.input])
            b.bind_ortvalue_output(p.output, sets[1 - k][p.input])
        b.bind_ortvalue_output(sig.y, yv)
        bindings.append(b)
    inner = [b._iobinding for b in bindings]
    run = sess._sess.run_with_iobinding if private else None

    def loop():
        k = 0
        for f in frames:
            xbuf[...] = f.reshape(xbuf.shape)
            if private:
                run(inner[k], None)
            else:
                sess.run_with_iobinding(bindings[k])
            ybuf.copy()
            k = 1 - k
    return loop


def _options():
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return so


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from edgernn.runtime import Runtime
    from edgernn.runtime import bench as b

    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "models/kws.onnx"
    rt = Runtime(path)
    steps = 2000
    sig, rng = rt.signature, np.random.default_rng(0)
    vocab = ((rt.meta or {}).get("input") or {}).get("vocab") or 2
    frames = (rng.integers(0, vocab, (steps,) + sig.frame_shape) if np.issubdtype(sig.dtype, np.integer)
              else rng.standard_normal((steps,) + sig.frame_shape)).astype(sig.dtype)
    res = b.measure({"edgernn": (b.edgernn_step_loop(rt, frames), steps),
                     "iobinding": (iobinding_loop(path, rt, frames, False), steps),
                     "iobinding private": (iobinding_loop(path, rt, frames, True), steps)}, rounds=9)
    for name in res:
        print(f"{name:18s} {res[name]['us']:7.2f} µs/step  ratio to edgernn {b.ratio(res, name, 'edgernn'):.2f}")


if __name__ == "__main__":
    main()
