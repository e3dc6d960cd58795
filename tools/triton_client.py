#!/usr/bin/env python3
"""A client for an edgernn model on Triton in plain tritonclient: no edgernn needed on this side.

    python tools/triton_client.py grpc://127.0.0.1:8001/kws frames.npy    # frames (T, F) float32

One sequence over one gRPC stream, one request per frame: the first request carries
sequence_start, the last sequence_end (the server then frees the sequence's state), every one
the same sequence_id. Prints one JSON line per step, as `edgernn stream --format jsonl` does
(without the label: see edgernn.cli.output for that). `pip install tritonclient grpcio numpy`.
"""

from __future__ import annotations

import json
import queue
import random
import sys
from urllib.parse import urlparse

import numpy as np
import tritonclient.grpc as grpcclient


def stream(url: str, frames: np.ndarray):
    u = urlparse(url)
    name = u.path.strip("/")
    client = grpcclient.InferenceServerClient(f"{u.hostname}:{u.port}")
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    sequence_id = random.getrandbits(63) | 1  # unique among the server's live sequences
    try:
        for t, frame in enumerate(frames):
            x = grpcclient.InferInput("x", [1, 1, frame.size], "FP32")
            x.set_data_from_numpy(frame.reshape(1, 1, -1).astype(np.float32))
            client.async_stream_infer(name, [x], sequence_id=sequence_id, sequence_start=t == 0,
                                      sequence_end=t == len(frames) - 1)
            result, error = answers.get(timeout=30)
            if error is not None:
                raise SystemExit(f"step {t}: {error}")
            yield t, result.as_numpy("y")[0, -1]
    finally:
        client.stop_stream()
        client.close()


def main(argv) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    for t, y in stream(argv[0], np.load(argv[1])):
        print(json.dumps({"t": t, "y": [float(f"{v:.9g}") for v in y]}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
