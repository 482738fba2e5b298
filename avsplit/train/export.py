"""Export a training checkpoint to a bundled weights file (model only, no optimizer state).

    python -m avsplit.train.export runs/speech/best.pt weights/speech_blstm.pt

Prints the sha256 to put in :mod:`avsplit.models.registry` and ``weights/README.md``.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import torch


def export(checkpoint: Path, out: Path) -> str:
    """Write ``{"config", "state_dict", "meta"}`` (float32) to ``out``; return its sha256."""
    ck = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model = ck["model"]
    meta = {k: ck[k] for k in ("step", "val_si_sdri") if k in ck}
    torch.save({"config": model["config"], "state_dict": model["state_dict"], "meta": meta}, out)
    return hashlib.sha256(out.read_bytes()).hexdigest()


if __name__ == "__main__":
    print(export(Path(sys.argv[1]), Path(sys.argv[2])))
