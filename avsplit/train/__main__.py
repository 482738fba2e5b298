"""Train avsplit's separation networks.

    python -m avsplit.train speech --data ../shared/data --out runs/speech2
    python -m avsplit.train music-data --out runs/music --scores 700
    python -m avsplit.train instruments --pools runs/music --data ../shared/data --out runs/instruments
    python -m avsplit.train nmf --pools runs/music --out runs/nmf
    python -m avsplit.train tagger --pools runs/music --data ../shared/data --out runs/tagger --music-folds 0,1
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _instrument_run_args(p: argparse.ArgumentParser, out: str, steps: int, batch: int,
                         threads: int, p_real: float) -> None:
    """The options shared by the networks trained on the rendered instrument pools."""
    p.add_argument("--pools", type=Path, default=Path("runs/music"))
    p.add_argument("--data", type=Path, default=None,
                   help="../shared/data: also validate on its real URMP pairs")
    p.add_argument("--out", type=Path, default=Path(out))
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--batch", type=int, default=batch)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=threads)
    p.add_argument("--init", type=Path, default=None, help="checkpoint to warm-start from")
    p.add_argument("--music-folds", default=None,
                   help="mix the real MUSIC solos of these folds into training (0, 1 or 0,1; "
                        "needs --data); the other fold's pairs are validated on")
    p.add_argument("--p-real", type=float, default=p_real,
                   help="share of training mixtures made of real solos (with --music-folds)")


def _folds(text: str | None) -> set[int] | None:
    """``"0,1"`` -> ``{0, 1}``; ``None`` stays ``None``."""
    return {int(k) for k in text.split(",")} if text else None


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m avsplit.train",
                                     description="Train avsplit's separation networks.")
    sub = parser.add_subparsers(dest="task", required=True)
    sp = sub.add_parser("speech", help="speech separator (2 voices + background)")
    sp.add_argument("--data", type=Path, default=Path("../shared/data"))
    sp.add_argument("--out", type=Path, default=Path("runs/speech"))
    sp.add_argument("--steps", type=int, default=30000)
    sp.add_argument("--batch", type=int, default=8)
    sp.add_argument("--seconds", type=float, default=2.0)
    sp.add_argument("--lr", type=float, default=1e-3)
    sp.add_argument("--threads", type=int, default=2)
    sp.add_argument("--init", type=Path, default=None, help="checkpoint to warm-start from")
    sp.add_argument("--residual-layers", type=int, default=None,
                    help="residual BLSTM blocks on top (widens the --init network; they start "
                         "at zero output)")
    sp.add_argument("--residual-hidden", type=int, default=None,
                    help="units per direction of each residual block (default 256)")
    sp.add_argument("--turn-prob", type=float, default=None,
                    help="share of two-voice examples whose voices take turns (default 0.25)")
    sp.add_argument("--cue", action="store_true",
                    help="train the face-cued target-speaker extractor (--init: blind weights)")
    md = sub.add_parser("music-data", help="render the synthetic instrument stems (fluidsynth)")
    md.add_argument("--out", type=Path, default=Path("runs/music"))
    md.add_argument("--scores", type=int, default=700, help="training scores to render")
    md.add_argument("--valid-scores", type=int, default=60)
    md.add_argument("--workers", type=int, default=2)
    md.add_argument("--seed", type=int, default=0)
    it = sub.add_parser("instruments", help="query-conditioned instrument separator")
    _instrument_run_args(it, "runs/instruments", steps=5000, batch=8, threads=2, p_real=0.5)
    it.add_argument("--seconds", type=float, default=3.0)
    nm = sub.add_parser("nmf", help="component classifier of the NMF instrument separator")
    nm.add_argument("--pools", type=Path, default=Path("runs/music"))
    nm.add_argument("--out", type=Path, default=Path("runs/nmf"))
    nm.add_argument("--mixtures", type=int, default=2000, help="training mixtures (6 s each)")
    nm.add_argument("--tune-mixtures", type=int, default=150)
    nm.add_argument("--valid-mixtures", type=int, default=200)
    nm.add_argument("--steps", type=int, default=3000, help="classifier optimisation steps")
    nm.add_argument("--per-label", type=int, default=20,
                    help="NMF components per asked instrument (and for the residual)")
    nm.add_argument("--threads", type=int, default=1)
    nm.add_argument("--no-net-prior", action="store_true",
                    help="do not tune the weight of the network-mask prior (no network run)")
    tg = sub.add_parser("tagger", help="audio instrument tagger (which instruments play)")
    _instrument_run_args(tg, "runs/tagger", steps=4000, batch=16, threads=1, p_real=0.4)
    args = parser.parse_args()
    if args.task == "speech":
        from avsplit.train.speech import train

        train(args.data, args.out, steps=args.steps, batch=args.batch, seconds=args.seconds,
              lr=args.lr, threads=args.threads, init=args.init, cue=args.cue,
              residual_layers=args.residual_layers, residual_hidden=args.residual_hidden,
              **({} if args.turn_prob is None else {"turn_prob": args.turn_prob}))
    elif args.task == "music-data":
        from avsplit.train.instruments import render_data

        render_data(args.out, args.scores, args.valid_scores, args.seed, args.workers)
    elif args.task == "nmf":
        from avsplit.train.nmf import train

        train(args.pools, args.out, n_train=args.mixtures, n_tune=args.tune_mixtures,
              n_valid=args.valid_mixtures, steps=args.steps, threads=args.threads,
              per_label=args.per_label,
              net_prior=not args.no_net_prior)
    elif args.task == "tagger":
        from avsplit.train.tagger import train

        train(args.pools, args.out, data=args.data, steps=args.steps, batch=args.batch,
              lr=args.lr, threads=args.threads, init=args.init,
              music_folds=_folds(args.music_folds), p_real=args.p_real)
    else:
        from avsplit.train.instruments import train

        train(args.pools, args.out, data=args.data, steps=args.steps, batch=args.batch,
              seconds=args.seconds, lr=args.lr, threads=args.threads, init=args.init,
              music_folds=_folds(args.music_folds), p_real=args.p_real)


if __name__ == "__main__":
    main()
