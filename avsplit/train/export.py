"""Export a training checkpoint to a bundled weights file (model only, no optimizer state).

    python -m avsplit.train.export runs/speech2/best.pt weights/speech_blstm.pt
    python -m avsplit.train.export runs/instruments3/best.pt weights/instrument_unet.pt

Prints the sha256 to put in :mod:`avsplit.models.registry` and ``weights/README.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import torch


def export(checkpoint: Path, out: Path, config_updates: dict | None = None) -> str:
    """Write ``{"config", "state_dict", "meta"}`` (float32) to ``out``; return its sha256."""
    ck = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model = ck["model"]
    meta = {k: ck[k] for k in ("step", "val_si_sdri", "val", "cpu_s") if k in ck}
    config = {**model["config"], **(config_updates or {})}
    payload = {"config": config, "state_dict": model["state_dict"], "meta": meta}
    if "network" in model:
        payload["network"] = model["network"]
    torch.save(payload, out)
    return hashlib.sha256(out.read_bytes()).hexdigest()


def learning_curve(log: Path, every: int = 1) -> str:
    """A markdown table of a run's ``log.jsonl``: step, CPU-hours, training loss and each
    validation score (every ``every``-th evaluation, and the last)."""
    rows = [json.loads(line) for line in Path(log).read_text().splitlines() if line.strip()]
    if not rows:
        return "(no evaluations logged)"
    keys = list(rows[-1]["val"])
    out = ["| step | CPU-hours | loss | " + " | ".join(keys) + " |",
           "|---:|---:|---:|" + "---:|" * len(keys)]
    for i, r in enumerate(rows):
        if i % every and i != len(rows) - 1:
            continue
        vals = " | ".join(f"{r['val'].get(k, float('nan')):.2f}" for k in keys)
        out.append(f"| {r['step']} | {r.get('cpu_h', float('nan')):.2f} | {r['loss']:.2f} | {vals} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m avsplit.train.export")
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--curve", type=Path, default=None, metavar="LOG",
                        help="also print the learning curve of this log.jsonl as a markdown table")
    parser.add_argument("--curve-every", type=int, default=1)
    args = parser.parse_args()
    print(export(args.checkpoint, args.out))
    if args.curve is not None:
        print(learning_curve(args.curve, args.curve_every))


if __name__ == "__main__":
    main()
