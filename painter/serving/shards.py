"""Sharded prediction under torchrun: the rows of one ``painter predict`` job split among processes.

``torchrun --nproc_per_node N -m painter predict ...`` starts N copies of the command with RANK, WORLD_SIZE,
LOCAL_RANK and a rendezvous address in their environment. Each rank paints one contiguous block of the job's
image rows into its own part file beside the output (``OUT.part2of4``), resumable exactly as a single run's
output is. When every part is complete, rank 0 appends them to the output in order and removes them, so the
output holds exactly the bytes one process writes (an image depends only on its prompt and seed). Blocks are
cut from the whole job, not from what is left, so a rerun after any rank died finds every part where it
stopped, and a merge cut short is finished by the next run. The processes only talk to agree on the seed,
to wait for each other and to learn whether one failed: gloo over TCP, on CPUs and GPUs alike; the part
files must be on a folder every node sees.
"""

from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from painter.errors import DataError

# A rank that finishes its block waits at the barrier for the others; a job may run for days.
WAIT = datetime.timedelta(days=7)


@dataclass(frozen=True)
class Shard:
    rank: int
    world: int
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "Shard | None":
        """This process's place under torchrun, or None when it runs alone."""
        try:
            world = int(os.environ.get("WORLD_SIZE", "1"))
            rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
        except ValueError as exc:
            raise DataError(f"torchrun's RANK / WORLD_SIZE / LOCAL_RANK are not whole numbers: {exc}") from exc
        return cls(rank, world, local) if world > 1 else None

    def block(self, rows: int, unit: int = 1) -> range:
        """The rows of a job of ``rows`` rows this rank paints: contiguous, whole ``unit``s of rows (the batch
        size, so that every batch holds the rows one process would batch together), as even as that allows."""
        units = -(-rows // unit)
        first, end = units * self.rank // self.world, units * (self.rank + 1) // self.world
        return range(min(first * unit, rows), min(end * unit, rows))

    def part(self, output: Path, unit: int, rank: int | None = None) -> Path:
        """Where a rank's block goes: named by the blocks' layout (processes, batch size), which a rerun
        must repeat to resume it."""
        return output.with_name(f"{output.name}.part{self.rank if rank is None else rank}of{self.world}-b{unit}")

    def stale_parts(self, output: Path, unit: int) -> list[Path]:
        """Parts left by an interrupted run with another number of processes or another batch size."""
        pattern = re.compile(re.escape(output.name) + r"\.part\d+of(\d+)-b(\d+)$")
        return sorted(p for p in output.parent.glob(f"{output.name}.part*")
                      if (m := pattern.match(p.name)) and (int(m.group(1)), int(m.group(2))) != (self.world, unit))


class Group:
    """The process group of a sharded job: gloo, used only for a few small messages."""

    def __init__(self, shard: Shard):
        import torch.distributed as dist

        self.dist, self.shard = dist, shard
        if not dist.is_initialized():
            dist.init_process_group("gloo", timeout=WAIT)

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        box = [value]
        self.dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_ok(self, error: str | None) -> list[str]:
        """Wait for every rank; the errors the ranks report (empty when all succeeded)."""
        errors: list[str | None] = [None] * self.shard.world
        self.dist.all_gather_object(errors, error)
        ranks: dict[str, list[str]] = {}
        for rank, e in enumerate(errors):
            if e:
                ranks.setdefault(e, []).append(str(rank))
        return [f"rank {', '.join(r)}: {e}" for e, r in ranks.items()]

    def close(self) -> None:
        self.dist.destroy_process_group()
