"""The code end of the DCGAN nets: the 4x4 (transposed) convolutions between a code and a 4x4 map.

    code_to_map(z, w)        == code_to_map_reference(z, w)        = F.conv_transpose2d(z.view(B, M, 1, 1), w)
    map_to_code(h, w, bias)  == map_to_code_reference(h, w, bias)  = F.conv2d(h, w, bias).flatten(1)

The generator's first layer is a 4x4 transposed convolution of a 1x1 input (the code), the
encoder's head a 4x4 convolution of a 4x4 map without padding. Every output of either sums over
its whole input, so both are matrix products over the flattened 4x4 map:

    h[b, c, i, j] = sum_m z[b, m] W[m, c, i, j]                   h = z @ W.view(M, 16 C)
    code[b, m] = sum_{c, i, j} h[b, c, i, j] W[m, c, i, j] + b_m    code = h.flatten(1) @ W.view(M, 16 C).T + b

The same sums, run by a dense matrix-product kernel instead of a convolution kernel that has a
single input or output position (docs/performance.md). The products are taken in the memory
order of the weight (and of the map), so that neither is copied: channels-last weights
(M, 4, 4, C in memory) give and take channels-last maps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def code_to_map_reference(z: Tensor, w: Tensor) -> Tensor:
    """The generator's first layer as the library's transposed convolution: (B, M) -> (B, C, 4, 4); w (M, C, 4, 4)."""
    return F.conv_transpose2d(z.reshape(z.shape[0], w.shape[0], 1, 1), w)


def map_to_code_reference(h: Tensor, w: Tensor, bias: Tensor | None) -> Tensor:
    """The encoder's head as the library's convolution: (B, C, 4, 4) -> (B, M); w (M, C, 4, 4)."""
    return F.conv2d(h, w, bias).flatten(1)


def code_to_map(z: Tensor, w: Tensor) -> Tensor:
    """:func:`code_to_map_reference` as one (B, M) x (M, 16 C) product; z (B, M) or (B, M, 1, 1)."""
    b, (m, c) = z.shape[0], w.shape[:2]
    z = z.reshape(b, m).to(w.dtype)
    if w.is_contiguous(memory_format=torch.channels_last):
        return (z @ w.permute(0, 2, 3, 1).reshape(m, -1)).view(b, 4, 4, c).permute(0, 3, 1, 2)
    return (z @ w.reshape(m, -1)).view(b, c, 4, 4)


def map_to_code(h: Tensor, w: Tensor, bias: Tensor | None) -> Tensor:
    """:func:`map_to_code_reference` as one (B, 16 C) x (16 C, M) product."""
    if w.is_contiguous(memory_format=torch.channels_last) and h.is_contiguous(memory_format=torch.channels_last):
        return F.linear(h.permute(0, 2, 3, 1).flatten(1), w.permute(0, 2, 3, 1).flatten(1), bias)
    return F.linear(h.flatten(1), w.flatten(1), bias)
