"""The one small error hierarchy. Every message says what was expected, what came, and the fix."""


class EdgeRNNError(Exception):
    """Base class: the CLI turns it into a one-line message and exit status 2."""


class InputError(EdgeRNNError):
    """Bad user input: a file, a frame, an option."""


class ModelFileError(EdgeRNNError):
    """A model, checkpoint or state file that cannot be used."""


class ProviderError(EdgeRNNError):
    """An execution provider that was required but is not available."""


class ParityError(EdgeRNNError):
    """Exported model disagrees with PyTorch beyond tolerance (exit status 1)."""

    def __init__(self, message: str, report: dict | None = None):
        super().__init__(message)
        self.report = report or {}


class NativeError(EdgeRNNError, RuntimeError):
    """onnxruntime refused a call made through its C API; the message is onnxruntime's own.

    The runtime turns it into a ModelFileError naming the cause (edgernn.runtime.checks.run_error)
    before it reaches a user; it stays a RuntimeError for code that caught it as one."""
