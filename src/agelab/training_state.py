"""Training state: what a checkpoint holds beside the weights, and saving, resuming and rolling back.

A checkpoint's state.pt (written by :func:`agelab.checkpoint.save_checkpoint` beside the weights) is

    {"step": int,                                  iterations done
     "optimizers": {phase name: Adam state_dict},
     "rng": {"torch": ByteTensor, "cuda": [...]},  "cuda" where CUDA is available
     "lr_scale": float, "rollbacks": int,          the divergence guard's learning-rate factor and rollbacks so far
     "model": model.train_state()}                 what the model keeps beside its weights (AGE: the adversary weight)

Checkpoints written before the divergence guard lack "lr_scale" and "rollbacks" and resume with
1.0 and 0. In a multi-process run only rank 0 reads and writes checkpoints; the other processes
get its weights, optimiser states and RNG stream by :meth:`agelab.distributed.Shard.sync_state`.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from agelab import checkpoint as ckpt
from agelab.config import TrainConfig
from agelab.cuda_graph import set_capturable
from agelab.distributed import Shard
from agelab.errors import first_line
from agelab.models.base import GenerativeModel


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the message names the step."""


def load_train_state(path: Path) -> dict:
    """The verified state.pt of checkpoint ``path``, checked to hold what a resume needs."""
    state = ckpt.load_state(path)
    try:
        ok = (isinstance(state["step"], int) and state["step"] >= 0 and isinstance(state["optimizers"], dict)
              and isinstance(state["rng"]["torch"], torch.Tensor)
              and math.isfinite(float(state.get("lr_scale", 1.0))) and float(state.get("lr_scale", 1.0)) > 0
              and isinstance(state.get("rollbacks", 0), int))
    except (KeyError, TypeError, ValueError, AttributeError):
        ok = False
    if not ok:
        raise ckpt.CheckpointError(f"{path}: state.pt lacks a valid step, optimiser or RNG state")
    return state


def state_scalars(state: dict) -> dict:
    """What the other processes need of rank 0's state.pt; the rest comes by ``Shard.sync_state``."""
    return {"step": state["step"], "lr_scale": state.get("lr_scale", 1.0), "rollbacks": state.get("rollbacks", 0)}


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class TrainingState:
    """The model, its optimisers, the RNG streams and the divergence guard's learning-rate factor of a run.

    Checkpoints go to ``run_dir/checkpoints`` (the newest ``cfg.keep_ckpts`` are kept). The
    learning rate of an iteration is ``cfg.lr`` x ``lr_scale`` x the halving schedule; each
    rollback halves ``lr_scale``, at most ``cfg.max_rollbacks`` times in a run.
    """

    def __init__(self, model: GenerativeModel, optimizers: dict[str, torch.optim.Optimizer], cfg: TrainConfig,
                 run_dir: Path, shard: Shard, device: torch.device):
        self.model, self.optimizers, self.cfg = model, optimizers, cfg
        self.run_dir, self.shard, self.device = run_dir, shard, device
        self.ckpt_root = run_dir / "checkpoints"
        self.lr_scale, self.rollbacks = 1.0, 0

    def set_learning_rate(self, step: int) -> float:
        """Set the learning rate of iteration ``step`` on every optimiser and tell the model; return it."""
        cfg = self.cfg
        lr = cfg.lr * self.lr_scale * (0.5 ** (step // cfg.lr_halve_every) if cfg.lr_halve_every else 1.0)
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = lr
        self.model.set_lr_factor(lr / cfg.lr)  # AGE: the adaptive adversary weight's step size
        return lr

    def save(self, step: int) -> None:
        """Checkpoint the state after iteration ``step`` (rank 0 only: the others hold the same state)."""
        if not self.shard.is_writer:
            return
        st = {"step": step, "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()}, "rng": _rng_state(),
              "lr_scale": self.lr_scale, "rollbacks": self.rollbacks, "model": self.model.train_state()}
        ckpt.save_checkpoint(self.ckpt_root, step, self.model, self.model.cfg.to_dict(), st, keep=self.cfg.keep_ckpts)

    def resume(self, path: Path, saved: dict) -> None:
        """Continue from checkpoint ``path``, whose checked state.pt is ``saved`` (the other processes
        pass its :func:`state_scalars` and get the rest by :meth:`sync`)."""
        if self.shard.is_writer:
            self._restore(path, saved)
        self.lr_scale, self.rollbacks = float(saved.get("lr_scale", 1.0)), int(saved.get("rollbacks", 0))

    def sync(self) -> None:
        """Every process: rank 0's weights, optimiser states and RNG stream."""
        self.shard.sync_state(self.model, self.optimizers, self.device)

    def roll_back(self, problem: str) -> int:
        """Back to the newest good checkpoint with ``lr_scale`` halved; return its step.

        Raises :class:`TrainingError`, saying ``problem``, once ``cfg.max_rollbacks`` rollbacks
        are spent or when no good checkpoint is left.
        """
        if self.rollbacks >= self.cfg.max_rollbacks:
            raise TrainingError(f"{problem}; giving up after {self.rollbacks} rollback(s) "
                                f"(--max-rollbacks {self.cfg.max_rollbacks})")
        step = self.shard.on_writer(lambda: self._restore_newest(problem))
        self.sync()
        self.lr_scale, self.rollbacks = self.lr_scale * 0.5, self.rollbacks + 1
        return step

    def _restore_newest(self, problem: str) -> int:
        target = ckpt.latest_good_checkpoint(self.ckpt_root)
        if target is None:
            raise TrainingError(f"{problem}; no good checkpoint to roll back to")
        saved = load_train_state(target)
        self._restore(target, saved)
        return saved["step"]

    def _restore(self, path: Path, saved: dict) -> None:
        """Weights, optimiser states, the model's train state and RNG of checkpoint ``path``."""
        model_cfg, weights = ckpt.load_model_files(path)
        if model_cfg != self.model.cfg.to_dict():
            raise ckpt.CheckpointError(f"{path}: checkpoint is of another model config than {self.run_dir}/config.json")
        try:
            self.model.load_state_dict(weights)
            for name, opt in self.optimizers.items():  # in this run's implementation and memory layout
                ckpt.load_optimizer_state(opt, saved["optimizers"][name])
            self.model.load_train_state(saved.get("model", {}))
            set_capturable(self.optimizers.values(), self.cfg.cuda_graphs)
            _set_rng_state(saved["rng"])
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            raise ckpt.CheckpointError(f"{path}: does not fit this run "
                                       f"({type(exc).__name__}: {first_line(exc)})") from None
