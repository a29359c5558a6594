"""Data-parallel training under torchrun: this process's place in the group, and the three exchanges.

``rig train`` started by ``torchrun --nproc_per_node N`` (or across machines) finds RANK and
WORLD_SIZE in its environment and joins the group (gloo on CPU, NCCL on GPUs). Started plainly
it is a group of one and nothing here does any work.

How N processes take exactly the steps one process takes (within float rounding):

* **features:** row ``k`` of the feature cache is computed by rank ``k % N`` only (its images are
  read and run through the trunk there), then every rank receives every row (``share_rows``);
* **batches:** one seeded permutation per epoch, the same on every rank; each global batch of
  ``batch_size`` rows is split, rank r taking rows ``r::N`` (``local``) -- DistributedSampler's
  rule applied per batch, so the union of the ranks' rows is the single process's batch;
* **gradients:** each rank's loss is its rows' share of the *global* batch's loss (every
  denominator is computed over the global batch, which every rank knows), so the sum of the
  ranks' gradients (``reduce_grads``, all-reduce SUM) is the single process's gradient.

The heads have no BatchNorm and no dropout (the trunk's BatchNorm runs in eval mode), so
nothing else depends on how a batch is split.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch

log = logging.getLogger(__name__)


class DataParallel:
    def __init__(self, join: bool = True):
        """``join``: take RANK / WORLD_SIZE from torchrun's environment; False: a group of one."""
        self.world = int(os.environ.get("WORLD_SIZE", "1")) if join else 1
        self.rank = int(os.environ.get("RANK", "0")) if join else 0
        self._dist = None
        if self.world > 1:
            import torch.distributed as dist

            backend = "nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend)
            self._dist = dist
            log.info("data-parallel training: rank %d of %d (%s)", self.rank, self.world, backend)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mine(self, k: int) -> bool:
        return k % self.world == self.rank

    def local(self, rows: np.ndarray) -> np.ndarray:
        return rows[self.rank::self.world]

    def share_rows(self, arr: np.ndarray) -> None:
        """Every rank's rows ``r::world`` of ``arr`` (filled by rank r) into every rank's copy."""
        if self._dist is None or arr is None:
            return
        n = len(arr)
        per = -(-n // self.world)
        mine = np.arange(self.rank, n, self.world)
        buf = torch.zeros((per, *arr.shape[1:]), dtype=torch.float32)
        buf[:len(mine)] = torch.from_numpy(arr[mine].astype(np.float32))
        parts = [torch.empty_like(buf) for _ in range(self.world)]
        self._dist.all_gather(parts, buf)
        for r, part in enumerate(parts):
            rows = np.arange(r, n, self.world)
            arr[rows] = part[:len(rows)].numpy().astype(arr.dtype)

    def reduce_grads(self, params) -> None:
        """Sum every parameter's gradient over the ranks (a rank whose slice was empty adds zeros)."""
        if self._dist is None:
            return
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            self._dist.all_reduce(p.grad)

    def barrier(self) -> None:
        if self._dist is not None:
            self._dist.barrier()

    def close(self) -> None:
        if self._dist is not None:
            self._dist.destroy_process_group()
            self._dist = None
