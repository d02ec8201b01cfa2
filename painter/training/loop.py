"""The training loop both trainers share: data order, accumulation, schedule, checkpoints, resume, logs.

A run is a directory. ``checkpoint.pt`` holds everything needed to continue exactly (weights, optimizer,
scheduler position, RNG states, the position in the data), written atomically every ``save_every`` steps, at
the end and on Ctrl-C; ``log.jsonl`` gets one line per step. The order of the data is a pure function of the
seed and the epoch, so a resumed run sees exactly the batches an uninterrupted one would have seen.

Distributed runs (``torchrun --nproc_per_node N -m painter train ...``) give every rank an equal slice of
each global batch; DDP averages the gradients, so N ranks with batch b equal one process with batch N*b.
Only rank 0 writes.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.distributed as dist
from tqdm import tqdm

from painter.data.files import atomic_output
from painter.errors import DataError, PainterError

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
LOG_FILE = "log.jsonl"
RUN_FILE = "run.json"
# What a run is: a resume with another of these would continue different weights on different data.
RUN_IDENTITY = ("model", "vqgan", "size", "keep_layers", "preset", "train", "crop")


class RunError(PainterError):
    """An output directory that holds another run, or a checkpoint that does not fit this run."""


@dataclass
class LoopConfig:
    epochs: float = 1.0
    batch_size: int = 16  # per process and micro-step
    grad_accum: int = 1
    lr: float = 4e-5
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    eval_every: int = 0  # optimizer steps; 0: only at the end
    save_every: int = 500
    seed: int = 42
    progress: bool = True

    def validate(self) -> "LoopConfig":
        if self.batch_size < 1 or self.grad_accum < 1:
            raise RunError("--batch-size and --grad-accum must be at least 1")
        if not (math.isfinite(self.epochs) and self.epochs > 0) or not (math.isfinite(self.lr) and self.lr > 0):
            raise RunError(f"--epochs and --lr must be positive finite numbers, got {self.epochs} and {self.lr}")
        if self.save_every < 1:
            raise RunError(f"--save-every must be at least 1 step, got {self.save_every}")
        if self.eval_every < 0 or self.warmup_steps < 0:
            raise RunError("--eval-every and --warmup-steps must not be negative")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise RunError(f"--weight-decay must be a finite number >= 0, got {self.weight_decay}")
        return self


class Task(Protocol):
    """What a trainer plugs into the loop."""

    modules: dict[str, torch.nn.Module]  # saved and restored by name
    optimizers: dict[str, torch.optim.Optimizer]
    dataset_size: int

    def train_step(self, indices: list[int], scale: float, step: int) -> dict[str, float]:
        """Forward and backward on these examples, gradients scaled by ``scale``; return the losses
        (and ``tokens``, the number of predicted tokens, where that means something)."""

    def optimizer_step(self, max_grad_norm: float) -> dict[str, float]:
        """Clip, step and zero the gradients accumulated since the last call."""
    def evaluate(self) -> dict[str, float]: ...
    def export(self, output: Path) -> None: ...


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warmup to 1, then cosine decay to ``min_ratio`` at ``total`` steps."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def epoch_order(size: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(size, generator=g).tolist()


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: torch.device) -> "Distributed":
        """Join the process group torchrun set up (gloo on CPU, NCCL on GPUs), or run alone."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), world)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def claim_output(output: Path, run_info: dict, resume: bool, overwrite: bool, dist_info: Distributed) -> bool:
    """Check that ``output`` may take this run (before anything is written there) and record the run;
    return True when a checkpoint is to be resumed. Every rank gets rank 0's answer."""
    resumed = False
    if dist_info.main:
        _lock_run(Path(output))
        resumed = _check_output(Path(output), run_info, resume, overwrite)
        Path(output).mkdir(parents=True, exist_ok=True)
        if not (resumed and (Path(output) / RUN_FILE).is_file()):  # a resumed run keeps its record (and start)
            with atomic_output(Path(output) / RUN_FILE) as tmp:
                tmp.write_text(json.dumps(run_info, indent=2, ensure_ascii=False))
    if dist_info.world > 1:
        flag = torch.tensor([int(resumed)])
        dist.broadcast(flag, 0)
        resumed = bool(flag.item())
    return resumed


_RUN_LOCKS: dict[str, int] = {}  # run directory -> the open descriptor holding its lock (this process's runs)


def _lock_run(output: Path) -> None:
    """Hold an exclusive lock on the run directory for as long as this process trains there, so a second
    ``painter train --resume`` on it (which would interleave two runs' checkpoints) stops at once. A process
    that trains in the same directory again (a notebook, the tests) takes its own lock over."""
    key = str(output.resolve())
    held = _RUN_LOCKS.pop(key, None)
    if held is not None:
        os.close(held)
    output.mkdir(parents=True, exist_ok=True)
    fd = os.open(output, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunError(f"another painter train is running in {output}; wait for it to finish (or stop it), or "
                       "choose another --output") from None
    _RUN_LOCKS[key] = fd


def _check_output(output: Path, run_info: dict, resume: bool, overwrite: bool) -> bool:
    checkpoint = output / CHECKPOINT
    info_path = output / RUN_FILE
    if resume:
        if not checkpoint.is_file():
            log.info("--resume: no checkpoint in %s yet, starting from the beginning", output)
            return False
        saved = json.loads(info_path.read_text()) if info_path.is_file() else {}
        if saved and saved.get("kind") != run_info.get("kind"):
            raise RunError(f"{output} holds a {saved.get('kind')} run, not a {run_info.get('kind')} run")
        for key in RUN_IDENTITY:
            if saved and key in saved and saved.get(key) != run_info.get(key):
                raise RunError(f"{output} holds a run started with {key} {saved.get(key)!r}, not {run_info.get(key)!r}: "
                               f"resume it with the same {key}, or pass --overwrite to start over there")
        return True
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise RunError(f"{output} already holds files (another run?); pass --resume to continue it or "
                       "--overwrite to start over there")
    if overwrite:
        for name in (CHECKPOINT, LOG_FILE):
            (output / name).unlink(missing_ok=True)
    return False


def save_checkpoint(output: Path, task: Task, step: int, epoch: int, position: int, schedulers: dict) -> None:
    state = {
        "step": step, "epoch": epoch, "position": position, "rng": rng_state(),
        "modules": {k: _unwrap(m).state_dict() for k, m in task.modules.items()},
        "optimizers": {k: o.state_dict() for k, o in task.optimizers.items()},
        "schedulers": {k: s.state_dict() for k, s in schedulers.items()},
    }
    # through a Python file, so that a full disk is an OSError (atomic_output's clear message, the previous
    # checkpoint kept) rather than the RuntimeError torch's own file writer raises
    with atomic_output(output / CHECKPOINT) as tmp, open(tmp, "wb") as fh:
        torch.save(state, fh)


def load_checkpoint(output: Path, task: Task, schedulers: dict) -> tuple[int, int, int]:
    try:
        state = torch.load(output / CHECKPOINT, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise RunError(f"{output / CHECKPOINT} could not be read ({exc}); remove it or use --overwrite") from exc
    for k, m in task.modules.items():
        _unwrap(m).load_state_dict(state["modules"][k])
    for k, o in task.optimizers.items():
        o.load_state_dict(state["optimizers"][k])
    for k, s in schedulers.items():
        s.load_state_dict(state["schedulers"][k])
    set_rng_state(state["rng"])
    return state["step"], state["epoch"], state["position"]


def _unwrap(module: torch.nn.Module) -> torch.nn.Module:
    return module.module if isinstance(module, torch.nn.parallel.DistributedDataParallel) else module


class _StopRequested:
    """Turns the first Ctrl-C (SIGINT) or SIGTERM into a flag the loop checks between steps."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("stopping after this step; a checkpoint will be written (press again to abort at once)")

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def truncate_log(output: Path, step: int) -> None:
    """Drop log lines of steps after ``step`` (written after the checkpoint a resumed run starts from)."""
    path = output / LOG_FILE
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [line for line in lines if line.endswith("\n") and json.loads(line)["step"] <= step]
        if len(kept) != len(lines):
            with atomic_output(path) as tmp:
                tmp.write_text("".join(kept), encoding="utf-8")


def run(task: Task, cfg: LoopConfig, output: Path, resume: bool, dist_info: Distributed) -> dict:
    """Train until ``cfg.epochs`` are done (or a stop is requested); return the last log record.

    ``resume`` comes from :func:`claim_output`, which the trainer calls before writing anything.
    """
    cfg.validate()
    output = Path(output)

    global_batch = cfg.batch_size * dist_info.world
    per_epoch = max(1, task.dataset_size // global_batch)  # micro-steps per epoch (the last partial one dropped)
    if task.dataset_size < global_batch:
        raise DataError(f"only {task.dataset_size} training examples: fewer than one batch of {global_batch}")
    total_micro = math.ceil(cfg.epochs * per_epoch)
    total_steps = math.ceil(total_micro / cfg.grad_accum)
    schedulers = {k: torch.optim.lr_scheduler.LambdaLR(
        o, lambda s: lr_factor(s, total_steps, cfg.warmup_steps, cfg.min_lr_ratio)) for k, o in task.optimizers.items()}

    step, epoch, position = 0, 0, 0
    torch.manual_seed(cfg.seed + dist_info.rank)
    random.seed(cfg.seed + dist_info.rank)
    if resume:
        step, epoch, position = load_checkpoint(output, task, schedulers)
        if dist_info.main:
            truncate_log(output, step)
        log.info("resumed at step %d (epoch %d, batch %d)", step, epoch, position)

    micro = step * cfg.grad_accum
    bar = tqdm(total=total_steps, initial=step, unit="step", disable=not (cfg.progress and dist_info.main),
               desc="training", dynamic_ncols=True)
    record: dict = {}
    tokens_seen, started = 0, time.perf_counter()
    order = epoch_order(task.dataset_size, cfg.seed, epoch)
    try:
        with _StopRequested() as stop:
            while micro < total_micro and not stop.requested:
                losses: dict[str, float] = {}
                for _ in range(cfg.grad_accum):
                    if position >= per_epoch:
                        epoch, position = epoch + 1, 0
                        order = epoch_order(task.dataset_size, cfg.seed, epoch)
                    batch = order[position * global_batch:(position + 1) * global_batch]
                    mine = batch[dist_info.rank::dist_info.world]
                    for k, v in task.train_step(mine, 1.0 / cfg.grad_accum, step).items():
                        losses[k] = losses.get(k, 0.0) + v / cfg.grad_accum
                    position += 1
                    micro += 1
                    if micro >= total_micro:
                        break
                losses.update(task.optimizer_step(cfg.max_grad_norm))
                tokens_seen += int(losses.pop("tokens", 0) * cfg.grad_accum) * dist_info.world
                for sched in schedulers.values():
                    sched.step()
                step += 1
                elapsed = time.perf_counter() - started
                record = {"step": step, "epoch": round(epoch + position / per_epoch, 4),
                          "lr": next(iter(task.optimizers.values())).param_groups[0]["lr"],
                          **{k: round(v, 6) for k, v in losses.items()}}
                if tokens_seen:
                    record["tokens_per_s"] = round(tokens_seen / elapsed, 1)
                record["seconds"] = round(elapsed, 1)  # since this run (or resume) began: recipes sum the runs
                last = micro >= total_micro
                if (cfg.eval_every and step % cfg.eval_every == 0) or last:
                    record.update({f"eval_{k}": round(v, 6) for k, v in task.evaluate().items()})
                if dist_info.main:
                    with open(output / LOG_FILE, "a", encoding="utf-8") as fh:
                        fh.write(json.dumps(record) + "\n")
                    bar.set_postfix({k: v for k, v in record.items() if "loss" in k or k == "tokens_per_s"})
                    bar.update(1)
                    if step % cfg.save_every == 0 or last or stop.requested:
                        save_checkpoint(output, task, step, epoch, position, schedulers)
                        task.export(output)
    finally:
        bar.close()
    return record


def training_seconds(records: list[dict]) -> float:
    """Wall time a run's log spent training, over all its resumes: each record's ``seconds`` counts from the
    start of its own process, so a drop marks a resume and the time before it is added up (the gaps between
    processes, a machine switched off overnight, are not)."""
    total, last = 0.0, 0.0
    for record in records:
        seconds = record.get("seconds")
        if seconds is None:
            continue
        if seconds < last:
            total += last
        last = seconds
    return total + last

