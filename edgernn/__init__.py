"""edgernn: recurrent networks from training to the edge.

Importing this package does nothing: no torch, no thread settings, no printing.
Train and export live in ``edgernn.train`` / ``edgernn.export`` (torch);
the runtime lives in ``edgernn.runtime`` (onnxruntime + numpy only).
"""

__version__ = "0.1.0"
