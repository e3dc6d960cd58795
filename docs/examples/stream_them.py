"""Stream the three exported files one frame at a time (torch-free) and compare with PyTorch.

    python docs/examples/stream_them.py      # after the exports in docs/your-own-model.md
"""

import sys
from pathlib import Path

import numpy as np

from edgernn.runtime import Runtime

rng = np.random.default_rng(0)
inputs = {"char": rng.integers(0, 64, size=200), "crnn": rng.standard_normal((200, 40), dtype=np.float32),
          "stacked": rng.standard_normal((200, 8), dtype=np.float32)}
streamed = {}
for name, frames in inputs.items():
    rt = Runtime(f"{name}.onnx")                    # numpy + onnxruntime only
    s = rt.stream()                                 # one stream: every state starts at zero
    streamed[name] = np.stack([s.step(f) for f in frames])
    print(f"{name}: {len(frames)} steps -> y {streamed[name].shape}; states "
          f"{', '.join(f'{k} {tuple(v.shape)}' for k, v in s.get_state().items())}")

# The same frames through the PyTorch modules, whole sequence at once (this part needs torch).
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import my_models  # noqa: E402

for name, cls in (("char", my_models.CharModel), ("crnn", my_models.CRNN), ("stacked", my_models.Stacked)):
    model = cls()
    model.load_state_dict(torch.load(f"{name}.pt", weights_only=True))
    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(inputs[name])[None])[0].numpy()
    print(f"{name}: max |streamed - PyTorch| = {np.abs(streamed[name] - ref).max():.2e}")
