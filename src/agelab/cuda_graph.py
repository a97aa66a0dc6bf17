"""Whole-iteration CUDA graphs for the training loop (``--cuda-graphs``).

At the paper's batch of 64 images of 32x32 the GPU finishes each kernel long before
Python has launched the next one: an AGE iteration is some 600 small kernels (three
forward/backward passes of two five-layer nets, three optimiser steps), so an eager loop
is bound by kernel launches, not by the GPU's arithmetic (measured: docs/performance.md,
"GPU"). A CUDA graph records the kernels of one whole iteration once and replays them
with a single launch.

What this needs from the iteration, and how the trainer provides it:

- Fixed addresses. The batch indices are copied into one static tensor before each
  replay; the images live on the device already; optimiser states are allocated before
  capture (by the eager warm-up iterations); loss logs are accumulated *in place* into
  tensors that exist before capture.
- No host syncs inside the iteration (the trainer has none: its finite-check is an
  on-device flag read only at log steps).
- Optimisers that run from device-side step counts: Adam with ``capturable=True``
  (:func:`set_capturable`). The learning rate is baked into the graph as a number,
  so a new learning rate (halving schedule, divergence-guard rollback) means a new
  capture; so does a checkpoint load, which replaces the optimiser state tensors.
- Random numbers: the latent samples are drawn inside the graph from the default
  CUDA generator, which PyTorch advances by the graph's whole offset at each replay,
  so a replay draws what the eager iteration would have drawn.

Everything else (logging, sample grids, checkpoints, the divergence guard) runs
eagerly between replays, as without graphs.
"""

from __future__ import annotations

from typing import Callable

import torch

WARMUP_ITERATIONS = 3  # eager iterations on a side stream before a capture (cuDNN autotuning, optimiser state)


def set_capturable(optimizers, capturable: bool) -> None:
    """Put Adam-type optimisers in (or out of) capturable mode, step counts on the matching device.

    Called after creating the optimisers and after every optimiser ``load_state_dict``: a
    checkpoint written with graphs on resumes without them (and the other way round).
    """
    for opt in optimizers:
        for group in opt.param_groups:
            if "capturable" not in group:
                continue
            group["capturable"] = capturable
            for p in group["params"]:
                st = opt.state.get(p, {})
                step = st.get("step")
                if isinstance(step, torch.Tensor):
                    st["step"] = step.to(device=p.device if capturable else "cpu", dtype=torch.float32)


class GraphedIteration:
    """Runs ``body(rows)`` (one training iteration on the batch rows) through a CUDA graph.

    The first ``WARMUP_ITERATIONS`` calls after construction or :meth:`invalidate` run
    eagerly on a side stream (as CUDA graphs require); the next call captures one
    iteration and replays it, and later calls only copy the rows and replay. Calls with
    a batch of another size run eagerly. ``captures`` counts the captures made.
    """

    def __init__(self, body: Callable[[torch.Tensor], None], device: torch.device):
        self.body, self.device = body, device
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_rows: torch.Tensor | None = None
        self.key = None  # what the captured graph assumed (e.g. the learning rate)
        self.warm = 0
        self.captures = 0
        self.pool = None  # one memory pool for every capture of this run

    def invalidate(self) -> None:
        """Forget the graph: the next calls warm up and capture again."""
        self.graph, self.warm = None, 0

    def __call__(self, rows: torch.Tensor, key=None) -> None:
        if key != self.key:
            self.invalidate()
            self.key = key
        if self.graph is not None and rows.shape == self.static_rows.shape:
            self.static_rows.copy_(rows)
            self.graph.replay()
            return
        if self.graph is not None or self.warm < WARMUP_ITERATIONS:  # another batch size, or warming up
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                self.body(rows)
            torch.cuda.current_stream(self.device).wait_stream(side)
            self.warm += self.graph is None
            return
        self.static_rows = rows.clone()
        graph = torch.cuda.CUDAGraph()
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        with torch.cuda.graph(graph, pool=self.pool):
            self.body(self.static_rows)  # recorded, not run
        self.graph = graph
        self.captures += 1
        graph.replay()  # this iteration
