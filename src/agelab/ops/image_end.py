"""The image end of the DCGAN nets: stride-2 4x4 (transposed) convolutions to or from a few channels.

    to_image(x, w)    == to_image_reference(x, w)    = F.conv_transpose2d(x, w, stride=2, padding=1)
    from_image(x, w)  == from_image_reference(x, w)  = F.conv2d(x, w, stride=2, padding=1)

The generator's last layer is a transposed convolution from w channels to the C = 1 or 3
image channels, and the gradient of the encoder's first layer with respect to its input
(needed whenever the encoder is differentiated through at a generated image) is the same
operation. oneDNN's kernels use the CPU poorly on this shape (many channels in, 1-3 out,
stride 2), far below the rate they reach on the other layers (figures: docs/performance.md).

The identity: for a (Cin, Cout, 4, 4) kernel, stride 2 and padding 1, output row 2m + p
(phase p) receives input row m + s through kernel tap k with 2(m + s) - 1 + k = 2m + p,
which gives two taps per phase:

    phase 0: (k=1, s=0), (k=3, s=-1)        phase 1: (k=2, s=0), (k=0, s=+1)

and likewise for columns. So ``Y = x (B*H*W, Cin) @ w (Cin, 4*4*Cout)`` holds every tap's
contribution, and summing the right taps along the width and then the height interleaves
them into the (B, Cout, 2H, 2W) output: the convolution's sums, in another order.

Only the forward of the generator's layer and the input gradient of the encoder's layer
change; the other gradients are oneDNN's (``torch.nn.grad.conv2d_weight``, ``F.conv2d``).
The product form runs on CPU in fp32 without autocast, for at most MAX_CHANNELS image
channels; otherwise ``to_image`` and ``from_image`` are their references.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.nn.grad import conv2d_weight

MAX_CHANNELS = 4  # image channels up to which the matrix-product form is used
_TAPS = {0: ((1, 0), (3, -1)), 1: ((2, 0), (0, 1))}  # phase -> (tap, shift) pairs, see the module docstring


def to_image_reference(x: Tensor, w: Tensor) -> Tensor:
    """The generator's last layer as the library's transposed convolution; w (Cin, C, 4, 4)."""
    return F.conv_transpose2d(x, w, stride=2, padding=1)


def from_image_reference(x: Tensor, w: Tensor) -> Tensor:
    """The encoder's first layer as the library's convolution; w (Cout, C, 4, 4)."""
    return F.conv2d(x, w, stride=2, padding=1)


def _add_shifted(dst: Tensor, src: Tensor, shift: int, dim: int) -> None:
    """dst[m] += src[m + shift] along ``dim`` wherever both exist (shift in -1, 0, 1)."""
    n = dst.shape[dim]
    if shift == 0:
        dst.add_(src)
    elif shift > 0:
        dst.narrow(dim, 0, n - shift).add_(src.narrow(dim, shift, n - shift))
    else:
        dst.narrow(dim, -shift, n + shift).add_(src.narrow(dim, 0, n + shift))


def _sum_taps(src: Tensor, dst: Tensor, tap_dim: int, shift_dim: int) -> None:
    """Each output phase p along ``tap_dim``: dst[p] = src[tap k0] + src[tap k1] shifted along ``shift_dim``.

    ``shift_dim`` counts the dimensions left once ``tap_dim`` is selected (it must come before it).
    """
    for phase, ((k0, _), (k1, shift)) in _TAPS.items():
        d = dst.select(tap_dim, phase)
        d.copy_(src.select(tap_dim, k0))
        _add_shifted(d, src.select(tap_dim, k1), shift, shift_dim)


def conv_transpose_s2(x: Tensor, w: Tensor) -> Tensor:
    """``F.conv_transpose2d(x, w, stride=2, padding=1)`` for a (Cin, Cout, 4, 4) kernel, as a product and an overlap-add.

    x (B, Cin, H, W) -> (B, Cout, 2H, 2W), in x's memory layout (channels-last or contiguous).
    """
    b, cin, h, wd = x.shape
    cout = w.shape[1]
    y = x.permute(0, 2, 3, 1).reshape(-1, cin) @ w.permute(0, 2, 3, 1).reshape(cin, 16 * cout)  # (B*H*W, 16 Cout)
    y = y.view(b, h, wd, 4, 4, cout).permute(0, 1, 3, 2, 4, 5)  # (B, H, k_row, W, k_col, Cout)
    cols = y.new_empty(b, h, 4, wd, 2, cout)  # column taps summed: (B, H, k_row, W, phase) = (B, H, k_row, 2W)
    _sum_taps(y, cols, tap_dim=4, shift_dim=3)
    cols = cols.view(b, h, 4, 2 * wd, cout)
    out = y.new_empty(b, h, 2, 2 * wd, cout)  # row taps summed: (B, H, phase, 2W) = (B, 2H, 2W)
    _sum_taps(cols, out, tap_dim=2, shift_dim=1)
    out = out.view(b, 2 * h, 2 * wd, cout).permute(0, 3, 1, 2)  # (B, Cout, 2H, 2W), channels-last memory
    return out if x.is_contiguous(memory_format=torch.channels_last) else out.contiguous()


class _ToImage(torch.autograd.Function):
    """conv_transpose2d(x, w, stride 2, padding 1) into a few channels: the generator's last layer."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor) -> Tensor:
        ctx.save_for_backward(x, w)
        return conv_transpose_s2(x, w)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, w = ctx.saved_tensors
        grad = _like(grad, x)  # (the image loss's gradient may come NCHW)
        gx = F.conv2d(grad, w, stride=2, padding=1) if ctx.needs_input_grad[0] else None  # the adjoint
        gw = conv2d_weight(grad, w.shape, x, stride=2, padding=1) if ctx.needs_input_grad[1] else None
        return gx, gw


class _FromImage(torch.autograd.Function):
    """conv2d(x, w, stride 2, padding 1) from a few channels: the encoder's first layer."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor) -> Tensor:
        ctx.save_for_backward(x, w)
        return F.conv2d(x, w, stride=2, padding=1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, w = ctx.saved_tensors
        grad = _like(grad, x)
        gx = conv_transpose_s2(grad, w) if ctx.needs_input_grad[0] else None  # the adjoint
        gw = conv2d_weight(x, w.shape, grad, stride=2, padding=1) if ctx.needs_input_grad[1] else None
        return gx, gw


def _like(grad: Tensor, x: Tensor) -> Tensor:
    """grad in x's memory layout: oneDNN otherwise converts the larger of the two (for the generator's
    layer the saved input, 16x the image gradient's size) on every call."""
    fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    return grad.contiguous(memory_format=fmt)


def _use_product_form(x: Tensor, w: Tensor) -> bool:
    """The product form for CPU fp32 without autocast, when w's second dimension (the image's channels:
    (Cin, C, 4, 4) for the generator, (Cout, C, 4, 4) for the encoder) is at most MAX_CHANNELS."""
    return (w.shape[1] <= MAX_CHANNELS and x.device.type == "cpu" and x.dtype == w.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu"))


def to_image(x: Tensor, w: Tensor) -> Tensor:
    """The generator's last layer, :func:`to_image_reference`, with the product form where it applies."""
    if _use_product_form(x, w):
        return _ToImage.apply(x, w)
    return to_image_reference(x, w)


def from_image(x: Tensor, w: Tensor) -> Tensor:
    """The encoder's first layer, :func:`from_image_reference`, with the product form where it applies."""
    if _use_product_form(x, w):
        return _FromImage.apply(x, w)
    return from_image_reference(x, w)
