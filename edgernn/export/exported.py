"""`Exported`: what an export wrote, the one report `export_checkpoint` and `export_module` return."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Exported:
    """What an export wrote."""

    files: tuple  # the ONNX files written: (model,), (model, companion) or (encoder, decoder)
    max_error: float | None  # the largest parity error against PyTorch; None when not verified
    meta: dict | None  # the model file's edgernn metadata (None for an encoder–decoder pair)
    reports: dict = field(default_factory=dict)  # parity reports: "model", or "encoder" and "decoder"
    triton: Path | None = None  # REPO/NAME when a Triton repository was written

    @property
    def path(self) -> Path:
        return self.files[0]

    @property
    def precision(self) -> dict | None:
        """export.precision of the file (weights, max_err_vs_fp32, tolerance); None at fp32."""
        return (self.meta or {}).get("export", {}).get("precision")

    @property
    def companion(self) -> str | None:
        """File name of the lookahead companion beside the model (bidirectional models)."""
        return ((self.meta or {}).get("lookahead") or {}).get("file")

    @property
    def offline(self) -> list | None:
        """Why the file is for whole-sequence use only ([{path, reason}]); None when it streams."""
        return ((self.meta or {}).get("offline") or {}).get("reasons")
