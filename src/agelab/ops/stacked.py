"""Several batches through one row-wise layer in one call.

    stacked(f, x1, x2, ...)  == stacked_reference(f, x1, x2, ...)  = (f(x1), f(x2), ...)

The identity: a layer f that maps each batch element (row) on its own, as a matrix product
does (``x @ W + b``), gives the same rows for the batches stacked, ``f(cat(x1, x2))``, split
back at the batch sizes. One product of B1 + B2 rows replaces two of B1 and B2 rows: in the
forward, in the input gradient, and in the weight gradient, whose sum over the rows then runs
over both batches in one product. A phase that runs a DCGAN net on two batches (the encoder on
x and g(z), the generator on z and e(x)) shares the net's code-end product this way
(:mod:`agelab.models.age`); the layers with batch norm are not row-wise (they normalise with
their batch's statistics) and still run on each batch.

The batches are split back with ``split``, whose backward concatenates their gradients; indexing
(``out[:b1]``) would make each one's backward a zero-filled full-size tensor, added afterwards.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def stacked_reference(f: Callable[[Tensor], Tensor], *xs: Tensor) -> tuple[Tensor, ...]:
    """f on each batch."""
    return tuple(f(x) for x in xs)


def stacked(f: Callable[[Tensor], Tensor], *xs: Tensor) -> tuple[Tensor, ...]:
    """f on the batches stacked along the first dimension, split back: :func:`stacked_reference` for a row-wise f."""
    return f(torch.cat(xs)).split([x.shape[0] for x in xs])
