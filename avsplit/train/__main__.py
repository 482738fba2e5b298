"""``python -m avsplit.train speech --data ../shared/data --out runs/speech``."""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m avsplit.train",
                                     description="Train avsplit's separation networks.")
    sub = parser.add_subparsers(dest="task", required=True)
    sp = sub.add_parser("speech", help="speech separator (1-3 voices + background)")
    sp.add_argument("--data", type=Path, default=Path("../shared/data"))
    sp.add_argument("--out", type=Path, default=Path("runs/speech"))
    sp.add_argument("--steps", type=int, default=12000)
    sp.add_argument("--batch", type=int, default=8)
    sp.add_argument("--seconds", type=float, default=3.0)
    sp.add_argument("--lr", type=float, default=1e-3)
    sp.add_argument("--threads", type=int, default=2)
    sp.add_argument("--init", type=Path, default=None, help="checkpoint to warm-start from")
    args = parser.parse_args()
    if args.task == "speech":
        from avsplit.train.speech import train

        train(args.data, args.out, steps=args.steps, batch=args.batch, seconds=args.seconds,
              lr=args.lr, threads=args.threads, init=args.init)


if __name__ == "__main__":
    main()
