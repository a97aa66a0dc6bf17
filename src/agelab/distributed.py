"""Multi-process training (``torchrun``): process group, global-batch statistics, one writer.

``torchrun --nproc_per_node N -m agelab train ...`` starts N copies of the trainer with
WORLD_SIZE, RANK and LOCAL_RANK set; :func:`start` reads them and joins the process
group. A run with N processes trains the same model as one process with the same
global batch (docs/scaling.md):

- data: the global batch of iteration t is still ``BatchOrder.indices(t)``
  (``--batch-size`` images); process r keeps rows ``[r*b, (r+1)*b)``, b = batch / N;
- latent samples: every process draws the *global* batch of z from the same RNG
  stream (same seed, same draws, re-synchronised from rank 0 on every restore) and
  keeps its own rows, so the z of the run are the z one process would draw;
- batch statistics: the codes that go into a divergence are gathered from every
  process (:meth:`Shard.gather`), and batch norm normalises with the statistics of
  the global batch (:class:`GlobalBatchNorm2d`);
- gradients: after each backward the stepped network's gradients are averaged over
  the processes (:meth:`Shard.average_gradients`; no DistributedDataParallel wrapper,
  see below), so every replica takes the same optimiser step;
- one writer: only rank 0 touches the run folder; the others get its path (and on
  resume its config and state) from rank 0.

Gradient semantics. Every cross-process operation here is differentiable with the
adjoint of "the sum of every process's loss": the backward of a gather or of a sum
over processes all-reduces (sums) the incoming gradients. Averaging the parameter
gradients over the N processes then gives the gradient of the *mean* of the N
losses. Each process's loss is ``D(global codes) + local reconstruction means``; the
divergence term is the same on every process and the local means of equal-sized
slices average to the global mean, so the mean of the N losses is exactly the
single-process loss of the global batch, and so is its gradient.

Why no DistributedDataParallel wrapper: the trainer steps one network per phase and
freezes the other, and the generator phase back-propagates *through* the frozen
encoder. One explicit all-reduce of the stepped network's gradients per optimiser
step (a single flat buffer) is simpler than wrapping each network in DDP with
``find_unused_parameters`` and gives the same result.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import pickle
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from agelab.checkpoint import load_optimizer_state
from agelab.config import ConfigError
from agelab.errors import first_line

T = TypeVar("T")

# Collectives wait this long for the slowest process (e.g. rank 0 writing the final report).
TIMEOUT = datetime.timedelta(minutes=60)


@dataclass(frozen=True)
class Launch:
    """What torchrun told this process: its rank among ``world_size`` and its rank on this node."""

    world_size: int
    rank: int
    local_rank: int


def _env_int(name: str) -> int | None:
    text = os.environ.get(name)
    if text is None or text.strip() == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"environment variable {name}={text!r} is not an integer (torchrun sets it)") from None


def launch_from_env() -> Launch | None:
    """torchrun's WORLD_SIZE / RANK / LOCAL_RANK, or None for a single-process run (unset, or WORLD_SIZE=1)."""
    world = _env_int("WORLD_SIZE")
    if world is None or world == 1:
        return None
    rank = _env_int("RANK")
    if world < 1 or rank is None or not 0 <= rank < world:
        raise ConfigError(f"environment: WORLD_SIZE={world} needs RANK in 0..{world - 1}, got {rank} "
                          "(start multi-process runs with torchrun)")
    local_rank = _env_int("LOCAL_RANK")
    return Launch(world, rank, rank if local_rank is None else local_rank)


def local_batch_size(batch_size: int, world_size: int) -> int:
    """Images per process; ``--batch-size`` is the global batch and must split evenly."""
    if batch_size % world_size:
        raise ConfigError(f"--batch-size: {batch_size} is not divisible by the number of processes ({world_size}); "
                          f"it is the global batch, split evenly over the processes")
    return batch_size // world_size


# ---------------------------------------------------------------------------
# differentiable collectives (adjoint: sum over processes of each one's loss)
# ---------------------------------------------------------------------------
class _GatherRows(torch.autograd.Function):
    """(b, ...) on each of N processes -> (N*b, ...) on every process, rows in rank order."""

    @staticmethod
    def forward(ctx: Any, local: Tensor, rank: int, world_size: int, group: Any) -> Tensor:
        local = local.contiguous()
        parts = [torch.empty_like(local) for _ in range(world_size)]
        dist.all_gather(parts, local, group=group)
        ctx.rank, ctx.rows, ctx.group = rank, local.shape[0], group
        return torch.cat(parts)  # (N*b, ...)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None, None]:
        # Every process's loss depends on my rows: their gradient is the sum of what each process sends back.
        total = grad.contiguous().clone()  # (N*b, ...)
        dist.all_reduce(total, group=ctx.group)
        return total[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows], None, None, None


class _SumOverProcesses(torch.autograd.Function):
    """x on each process -> sum of x over the processes, on every process."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, group: Any) -> Tensor:
        ctx.group = group
        total = x.contiguous().clone()
        dist.all_reduce(total, group=group)
        return total

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        total = grad.contiguous().clone()
        dist.all_reduce(total, group=ctx.group)
        return total, None


# ---------------------------------------------------------------------------
# this process's place in the run
# ---------------------------------------------------------------------------
@dataclass
class Shard:
    """This process's place in a run: rank r of ``world_size`` processes (1 = a plain single-process run).

    In a single-process run every method is a no-op or the identity, so the trainer
    has one code path.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    group: Any = None  # the process group; None = the default one
    owns_group: bool = field(default=False, repr=False)  # created by start(): close() destroys it

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_writer(self) -> bool:
        """Only rank 0 writes the run folder."""
        return self.rank == 0

    # ---- data -------------------------------------------------------------------
    def rows(self, n: int) -> slice:
        """This process's rows of a global batch of n (n divisible by world_size)."""
        b = n // self.world_size
        return slice(self.rank * b, (self.rank + 1) * b)

    def local_rows(self, batch: Tensor) -> Tensor:
        """(B, ...) global batch -> (B / N, ...) this process's slice; the batch itself in a single process."""
        return batch[self.rows(len(batch))] if self.distributed else batch

    def gather(self, local: Tensor) -> Tensor:
        """(b, ...) rows of every process -> (N*b, ...), differentiable (see the module docstring)."""
        if not self.distributed:
            return local
        return _GatherRows.apply(local, self.rank, self.world_size, self.group)

    def sum(self, x: Tensor) -> Tensor:
        """Sum of ``x`` over the processes, differentiable."""
        if not self.distributed:
            return x
        return _SumOverProcesses.apply(x, self.group)

    # ---- gradients and logs ---------------------------------------------------------
    def average_gradients(self, params: Iterable[nn.Parameter]) -> None:
        """Replace each gradient by its mean over the processes (one all-reduce of a flat buffer)."""
        if not self.distributed:
            return
        grads = [p.grad for p in params if p.grad is not None]  # the same list on every process
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])  # (P,)
        dist.all_reduce(flat, group=self.group)
        flat.div_(self.world_size)
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view(g.shape))
            offset += g.numel()

    def mean_over_processes(self, values: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Every value averaged over the processes (same keys everywhere): local batch means -> global means."""
        if not self.distributed or not values:
            return dict(values)
        keys = sorted(values)
        stacked = torch.stack([torch.as_tensor(values[k]).float().reshape(()) for k in keys])  # (K,)
        dist.all_reduce(stacked, group=self.group)
        stacked.div_(self.world_size)
        return {k: stacked[i] for i, k in enumerate(keys)}

    # ---- control ----------------------------------------------------------------------
    def barrier(self) -> None:
        if self.distributed:
            dist.barrier(group=self.group)

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every process (pickled; for small control data)."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def first_of(self, value: T | None) -> T | None:
        """The value of the lowest rank whose value is not None, on every process (e.g. a problem report)."""
        if not self.distributed:
            return value
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value, group=self.group)
        return next((v for v in values if v is not None), None)

    def any_signal(self, name: str | None) -> str | None:
        """A signal name if any process caught one (the highest signal number wins), else None.

        Processes may catch a signal at different iterations; agreeing every iteration
        makes them all stop at the same one.
        """
        if not self.distributed:
            return name
        import signal

        number = torch.tensor([signal.Signals[name].value if name else 0], dtype=torch.int64)  # CPU: gloo
        dist.all_reduce(number, op=dist.ReduceOp.MAX, group=self.group)
        return signal.Signals(int(number)).name if int(number) else None

    def on_writer(self, fn: Callable[[], T], share: Callable[[T], Any] | None = None) -> T:
        """Run ``fn`` on rank 0 only and give every process its result (or raise its exception everywhere).

        ``share`` maps rank 0's result to what the other processes receive (default: all of it).
        """
        if not self.distributed:
            return fn()
        result, error, payload = None, None, None
        if self.is_writer:
            try:
                result = fn()
                payload = (result if share is None else share(result), None)
            except Exception as exc:  # re-raised on every process below
                error = exc
                payload = (None, _portable(exc))
        shared, shared_error = self.broadcast(payload)  # rank 0's payload everywhere
        if error is not None:
            raise error
        if shared_error is not None:
            raise shared_error
        return result if self.is_writer else shared

    @contextlib.contextmanager
    def writer_first(self):
        """The block runs on rank 0, then (if it succeeded) on the others; e.g. loading a dataset rank 0 may download."""
        if not self.distributed:
            yield
            return
        if self.is_writer:
            try:
                yield
            except Exception as exc:
                self.broadcast(_portable(exc))  # the others raise it instead of running the block
                raise
            self.broadcast(None)
        else:
            error = self.broadcast(None)
            if error is not None:
                raise error
            yield

    def sync_state(self, model: nn.Module, optimizers: Mapping[str, torch.optim.Optimizer], device: torch.device) -> None:
        """Rank 0's weights, buffers, optimiser states and RNG state on every process.

        Called after building or restoring the model, so that the replicas start equal
        and draw the same random numbers; no file is read by the other processes.
        """
        if not self.distributed:
            return
        with torch.no_grad():
            for t in [*model.parameters(), *model.buffers()]:
                buf = t.data if t.data.is_contiguous() else t.data.contiguous()
                dist.broadcast(buf, src=0, group=self.group)
                if buf is not t.data:
                    t.data.copy_(buf)
        states = None
        if self.is_writer:
            states = {name: _to_cpu(opt.state_dict()) for name, opt in optimizers.items()}
        states = self.broadcast(states)
        if not self.is_writer:
            for name, opt in optimizers.items():
                load_optimizer_state(opt, states[name])
        rng = self.broadcast({"torch": torch.get_rng_state(),
                              "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None})
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None:
            torch.cuda.set_rng_state(rng["cuda"], device)  # rank 0's stream on this process's own GPU

    def close(self) -> None:
        """Leave the process group if :func:`start` created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _portable(exc: BaseException | None) -> BaseException | None:
    """``exc`` if it survives pickling, else a RuntimeError with its type and first line."""
    if exc is None:
        return None
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"rank 0: {type(exc).__name__}: {first_line(exc)}")


def start() -> Shard:
    """Join the run's process group: the one already initialised, else torchrun's (env://), else none.

    The backend is gloo, plus NCCL for CUDA tensors where CUDA is available
    (``cpu:gloo,cuda:nccl``): CPU tensors and control messages go over gloo, GPU
    tensors over NCCL. The device is only known once the run's config is (on resume,
    after rank 0 has read it), hence both. A group initialised by the caller must
    also take CPU tensors (gloo), which carry the per-iteration stop-signal check.
    """
    if dist.is_available() and dist.is_initialized():
        world = dist.get_world_size()
        if world == 1:
            return Shard()
        local = _env_int("LOCAL_RANK")
        return Shard(rank=dist.get_rank(), world_size=world, local_rank=dist.get_rank() if local is None else local)
    launch = launch_from_env()
    if launch is None:
        return Shard()
    if not dist.is_available():
        raise ConfigError("torch.distributed is not available in this torch build; run without torchrun")
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    try:
        dist.init_process_group(backend, rank=launch.rank, world_size=launch.world_size, timeout=TIMEOUT)
    except ValueError as exc:  # e.g. MASTER_ADDR missing: not started by torchrun
        raise ConfigError(f"torchrun environment: {first_line(exc)}") from None
    return Shard(rank=launch.rank, world_size=launch.world_size, local_rank=launch.local_rank, owns_group=True)


# ---------------------------------------------------------------------------
# batch norm over the global batch
# ---------------------------------------------------------------------------
class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that, in training, normalises with the mean and variance of the global batch.

    Same parameters, buffers and state_dict keys as ``nn.BatchNorm2d`` (checkpoints are
    interchangeable with single-process runs); in eval mode it is exactly BatchNorm2d.
    ``torch.nn.SyncBatchNorm`` does the same on GPUs only; this version works on any
    device. Statistics are accumulated in fp32.
    """

    shard: Shard

    def forward(self, x: Tensor) -> Tensor:  # (b, C, H, W)
        if not (self.training or self.running_mean is None):
            return super().forward(x)  # running statistics: no communication
        shard = self.shard
        dims = (0, 2, 3)
        xf = x.float()
        count = (x.numel() // x.shape[1]) * shard.world_size  # values per channel in the global batch
        mean = shard.sum(xf.sum(dims)) / count  # (C,)
        centered = xf - mean.view(1, -1, 1, 1)
        var = shard.sum(centered.pow(2).sum(dims)) / count  # (C,) biased, as batch norm normalises
        y = centered * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        if self.training and self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                f = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - f).add_(mean.detach(), alpha=f)
                self.running_var.mul_(1 - f).add_(var.detach() * (count / max(count - 1, 1)), alpha=f)  # unbiased
        return y.to(x.dtype)


def use_global_batch_norm(module: nn.Module, shard: Shard) -> nn.Module:
    """Replace every BatchNorm2d in ``module`` by a :class:`GlobalBatchNorm2d` sharing its parameters and buffers."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            bn = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            bn.shard = shard
            # Collectives stay out of torch.compile graphs. Wrapped here, not at class definition:
            # torch.compiler.disable imports dynamo, a slow import that single-process runs never need.
            bn.forward = torch.compiler.disable(bn.forward)
            if child.affine:
                bn.weight, bn.bias = child.weight, child.bias
            if child.track_running_stats:
                bn.running_mean, bn.running_var = child.running_mean, child.running_var
                bn.num_batches_tracked = child.num_batches_tracked
            bn.train(child.training)
            setattr(module, name, bn)
        else:
            use_global_batch_norm(child, shard)
    return module


@contextlib.contextmanager
def fp32_region(device_type: str):
    """Autocast off: what runs inside computes in the dtype of its inputs."""
    with torch.autocast(device_type, enabled=False):
        yield
