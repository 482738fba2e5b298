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


def model_entry(checkpoint: dict) -> dict:
    """The ``{"config", "state_dict", ...}`` model entry of a training checkpoint (``last.pt``,
    ``best.pt``: it sits under ``"model"``) or of an exported weights file (it is the file)."""
    return checkpoint["model"] if "model" in checkpoint else checkpoint


def fit(model, out: Path, loss_of: Callable[[np.random.Generator], torch.Tensor],
        evaluate: Callable[[], dict[str, float]], steps: int, lr: float = 1e-3,
        eval_every: int = 250, checkpoint_minutes: float = 5.0, seed: int = 0,
        init: Path | None = None,
        score: Callable[[dict[str, float]], float] | None = None) -> Path:
    """Train (or resume) ``model`` until ``steps``.

    Args:
        model: a network with ``to_checkpoint()`` / ``state_dict()``.
        out: run folder.
        loss_of: ``rng -> scalar loss`` of one fresh training batch.
        evaluate: ``() -> {condition: score}`` on fixed validation data (higher is better; the
            mean decides ``best.pt``).
        steps: total optimiser steps; the learning rate decays from ``lr`` to ``lr / 10``
            (cosine).
        init: a checkpoint or exported weights file with the same layer shapes (or, for a
            model with ``load_warm_start``, a subset of them) to start from
            (ignored when resuming); the step stored in it continues the schedule and the
            CPU-time count, with a fresh optimiser.
        score: ``metrics -> float`` that decides ``best.pt`` (default: the mean of all).

    Returns:
        Path of ``out/best.pt``.
    """
    out.mkdir(parents=True, exist_ok=True)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    step, best, cpu_before = 0, -math.inf, 0.0
    score = score or (lambda metrics: float(np.mean(list(metrics.values()))))
    if (out / "last.pt").exists():
        ck = torch.load(out / "last.pt", weights_only=True)
        model.load_state_dict(ck["model"]["state_dict"])
        opt.load_state_dict(ck["optimizer"])
        step, best, cpu_before = ck["step"], ck["best"], ck.get("cpu_s", 0.0)
        print(f"resumed at step {step}", flush=True)
    elif init is not None:
        ck = torch.load(init, map_location="cpu", weights_only=True)
        weights = model_entry(ck)
        # a network with added zero-output layers loads the smaller one's weights
        getattr(model, "load_warm_start", model.load_state_dict)(weights["state_dict"])
        meta = ck.get("meta", ck)
        step, cpu_before = int(meta.get("step", 0)), float(meta.get("cpu_s", 0.0))
        print(f"warm start from {init} at step {step}", flush=True)
    rng = np.random.default_rng(seed + step)
    last_save = t0 = time.time()
    cpu0 = time.process_time()
    losses: list[float] = []

    def save(name: str, extra: dict | None = None):
        tmp = out / f".{name}.tmp"
        payload = {"model": model.to_checkpoint(), "optimizer": opt.state_dict(), "step": step,
                   "best": best, "cpu_s": cpu_before + time.process_time() - cpu0, **(extra or {})}
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
            value = score(metrics)
            record = {"step": step, "loss": float(np.mean(losses)), "val": metrics,
                      "elapsed_s": round(time.time() - t0, 1),
                      "cpu_h": round((cpu_before + time.process_time() - cpu0) / 3600, 3)}
            losses = []
            with open(out / "log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            print(json.dumps(record), flush=True)
            if value > best:
                best = value
                save("best.pt", {"val": metrics})
        if time.time() - last_save > checkpoint_minutes * 60 or step == steps:
            save("last.pt")
            last_save = time.time()
    return out / "best.pt"
