"""The training loop shared by our networks: Adam, cosine decay, evaluation, checkpoints.

A run in ``out/`` writes ``last.pt`` every few minutes (model, optimiser, step; a run that is
started again resumes from it), ``best.pt`` whenever the validation score improves, and one
JSON line per evaluation to ``log.jsonl``, so long runs survive a stopped session.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch


def fit(model, out: Path, loss_of: Callable[[np.random.Generator], torch.Tensor],
        evaluate: Callable[[], dict[str, float]], steps: int, lr: float = 1e-3,
        eval_every: int = 250, checkpoint_minutes: float = 5.0, seed: int = 0,
        init: Path | None = None) -> Path:
    """Train (or resume) ``model`` until ``steps``.

    Args:
        model: a network with ``to_checkpoint()`` / ``state_dict()``.
        out: run folder.
        loss_of: ``rng -> scalar loss`` of one fresh training batch.
        evaluate: ``() -> {condition: score}`` on fixed validation data (higher is better; the
            mean decides ``best.pt``).
        steps: total optimiser steps; the learning rate decays from ``lr`` to ``lr / 10``
            (cosine).
        init: a checkpoint with the same layer shapes to start from (ignored when resuming).

    Returns:
        Path of ``out/best.pt``.
    """
    out.mkdir(parents=True, exist_ok=True)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    step, best = 0, -math.inf
    if init is not None:
        model.load_state_dict(torch.load(init, weights_only=False)["model"]["state_dict"])
    if (out / "last.pt").exists():
        ck = torch.load(out / "last.pt", weights_only=False)
        model.load_state_dict(ck["model"]["state_dict"])
        opt.load_state_dict(ck["optimizer"])
        step, best = ck["step"], ck["best"]
        print(f"resumed at step {step}", flush=True)
    rng = np.random.default_rng(seed + step)
    last_save = t0 = time.time()
    losses: list[float] = []

    def save(name: str, extra: dict | None = None):
        tmp = out / f".{name}.tmp"
        payload = {"model": model.to_checkpoint(), "optimizer": opt.state_dict(), "step": step,
                   "best": best, **(extra or {})}
        torch.save(payload, tmp)
        tmp.replace(out / name)

    while step < steps:
        model.train()
        for g in opt.param_groups:
            g["lr"] = lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        loss = loss_of(rng)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        step += 1
        losses.append(loss.item())
        if step % eval_every == 0 or step == steps:
            model.eval()
            metrics = evaluate()
            score = float(np.mean(list(metrics.values())))
            record = {"step": step, "loss": float(np.mean(losses)), "val": metrics,
                      "elapsed_s": round(time.time() - t0, 1)}
            losses = []
            with open(out / "log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            print(json.dumps(record), flush=True)
            if score > best:
                best = score
                save("best.pt", {"val": metrics})
        if time.time() - last_save > checkpoint_minutes * 60 or step == steps:
            save("last.pt")
            last_save = time.time()
    return out / "best.pt"
