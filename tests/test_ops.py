"""agelab.ops: every fast form against its reference, values and gradients.

The tolerance is relative: the norm of the difference over the norm of the reference, at most
RTOL = 1e-5 in fp32. Each fast form computes its reference's sums in another order, which moves
a result by float rounding: at most 3e-7 of the norm here (AMD EPYC, 2026-12-02). Intel and AMD
CPUs run other kernels, which sum in other orders, so the tolerance leaves a margin of over 30x;
a wrong tap, shift, layout or transposition moves the result by its own scale (order 1). A norm,
unlike an element-wise tolerance, is not decided by an element that cancels to near zero. In
float64 the hand-written backward passes are checked as the adjoints (``gradcheck``).
"""

from __future__ import annotations

import pytest
import torch

from agelab.ops import (code_to_map, code_to_map_reference, from_image, from_image_reference, map_to_code,
                        map_to_code_reference, stacked, stacked_reference, to_image, to_image_reference)
from agelab.ops.image_end import _FromImage, _ToImage, conv_transpose_s2

CL = torch.channels_last
RTOL = 1e-5


def _layout(t: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return t.contiguous(memory_format=CL) if channels_last else t.contiguous()


def rel_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got - want).norm() / want.norm()).item()


def assert_agree(fast, reference, inputs, needs_grad=None) -> None:
    """fast(*inputs) and reference(*inputs): equal values, and equal gradients of the inputs that ``needs_grad``
    names (default: all) for one random upstream gradient, each to RTOL of the reference's norm."""
    needs_grad = range(len(inputs)) if needs_grad is None else needs_grad
    inputs = [t.detach().clone().requires_grad_(i in needs_grad) for i, t in enumerate(inputs)]
    out, ref = fast(*inputs), reference(*inputs)
    assert out.shape == ref.shape
    assert rel_error(out, ref) < RTOL
    upstream = torch.randn_like(ref)
    wrt = [t for t in inputs if t.requires_grad]
    for got, want in zip(torch.autograd.grad(out, wrt, upstream), torch.autograd.grad(ref, wrt, upstream)):
        assert got.shape == want.shape and rel_error(got, want) < RTOL


# ---- image end: stride-2 4x4 (transposed) convolutions into / from a few channels ------------------------------
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("cin,cout,size", [(8, 1, 16), (16, 3, 8), (5, 2, 5), (3, 4, 1), (7, 3, 2)])
def test_overlap_add_equals_the_transposed_convolution(cin, cout, size, channels_last):
    torch.manual_seed(0)
    x = _layout(torch.randn(4, cin, size, size), channels_last)
    w = _layout(torch.randn(cin, cout, 4, 4), channels_last)
    out = conv_transpose_s2(x, w)
    assert out.shape == (4, cout, 2 * size, 2 * size)
    if size > 1:  # (a 1x1 map is both layouts at once)
        assert out.is_contiguous(memory_format=CL if channels_last else torch.contiguous_format)
    assert rel_error(out, to_image_reference(x, w)) < RTOL


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("needs", [(0, 1), (0,), (1,)])
def test_image_end_layers_give_their_references_values_and_gradients(needs, channels_last):
    torch.manual_seed(1)
    h = _layout(torch.randn(6, 16, 8, 8), channels_last)  # generator side: 16 channels -> 3 image channels
    img = _layout(torch.randn(6, 3, 16, 16), channels_last)  # encoder side: 3 image channels -> 16
    w = _layout(torch.randn(16, 3, 4, 4) * 0.1, channels_last)
    for layer, reference, x, name in ((to_image, to_image_reference, h, "_ToImageBackward"),
                                      (from_image, from_image_reference, img, "_FromImageBackward")):
        assert type(layer(x, w.requires_grad_()).grad_fn).__name__ == name  # the product form ran
        assert_agree(layer, reference, (x, w), needs_grad=needs)


def test_image_end_backward_passes_are_the_adjoints_in_double_precision():
    torch.manual_seed(2)
    x = torch.randn(2, 5, 3, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_ToImage.apply, (x, w))
    img = torch.randn(2, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    w_e = torch.randn(5, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_FromImage.apply, (img, w_e))


def test_image_end_layers_elsewhere_are_their_references():
    # more than 4 image channels, float64, or bf16 autocast: the library's convolution, bit for bit
    x, w = torch.randn(2, 8, 4, 4), torch.randn(8, 5, 4, 4)
    assert torch.equal(to_image(x, w), to_image_reference(x, w))
    x64, w64 = x.double(), torch.randn(8, 3, 4, 4, dtype=torch.float64)
    assert torch.equal(to_image(x64, w64), to_image_reference(x64, w64))
    w3 = torch.randn(8, 3, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = to_image(x, w3)
        assert out.dtype == torch.bfloat16
        assert torch.equal(out, to_image_reference(x, w3))
    img = torch.randn(2, 3, 8, 8, requires_grad=True)
    assert type(from_image(img, torch.randn(8, 3, 4, 4)).grad_fn).__name__ == "_FromImageBackward"
    assert type(from_image(torch.randn(2, 6, 8, 8), torch.randn(8, 6, 4, 4)).grad_fn).__name__ != "_FromImageBackward"


# ---- code end: the 4x4 (transposed) convolutions between a code and a 4x4 map, as matrix products -----------------
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("code_shape", ["flat", "1x1 map"])
def test_code_to_map_gives_the_transposed_convolution_s_values_and_gradients(code_shape, channels_last):
    torch.manual_seed(3)
    z = torch.randn(5, 8) if code_shape == "flat" else torch.randn(5, 8, 1, 1)
    w = _layout(torch.randn(8, 6, 4, 4), channels_last)  # (M, C, 4, 4)
    out = code_to_map(z, w)
    assert out.shape == (5, 6, 4, 4)
    assert out.is_contiguous(memory_format=CL if channels_last else torch.contiguous_format)  # w's layout, no copy
    assert_agree(code_to_map, code_to_map_reference, (z, w))


@pytest.mark.parametrize("map_layout", [False, True])
@pytest.mark.parametrize("weight_layout", [False, True])
def test_map_to_code_gives_the_convolution_s_values_and_gradients(weight_layout, map_layout):
    torch.manual_seed(4)
    h = _layout(torch.randn(5, 6, 4, 4), map_layout)
    w = _layout(torch.randn(8, 6, 4, 4), weight_layout)  # (M, C, 4, 4)
    bias = torch.randn(8)
    assert map_to_code(h, w, bias).shape == (5, 8)
    assert_agree(map_to_code, map_to_code_reference, (h, w, bias))
    assert_agree(lambda h, w: map_to_code(h, w, None), lambda h, w: map_to_code_reference(h, w, None), (h, w))


# ---- stacked: several batches through one row-wise layer in one call ---------------------------------------------
def _two_batches(op, layer):
    """(x1, x2, *weights) -> the outputs of ``layer(x, *weights)`` on both batches under ``op`` (stacked or its
    reference), side by side in one tensor."""
    return lambda x1, x2, *weights: torch.cat([o.flatten() for o in op(lambda x: layer(x, *weights), x1, x2)])


@pytest.mark.parametrize("channels_last", [False, True])
def test_stacked_batches_through_a_row_wise_layer_give_each_batch_s_values_and_gradients(channels_last):
    """The code-end layers on two batches of different sizes: the outputs, the batches' gradients and the weights'
    (summed over both batches) are those of one call per batch."""
    torch.manual_seed(5)
    h1, h2 = _layout(torch.randn(5, 6, 4, 4), channels_last), _layout(torch.randn(3, 6, 4, 4), channels_last)
    w_head, bias = _layout(torch.randn(8, 6, 4, 4), channels_last), torch.randn(8)
    z1, z2, w_first = torch.randn(5, 8), torch.randn(3, 8), _layout(torch.randn(8, 6, 4, 4), channels_last)
    for layer, inputs in ((map_to_code, (h1, h2, w_head, bias)), (code_to_map, (z1, z2, w_first))):
        assert_agree(_two_batches(stacked, layer), _two_batches(stacked_reference, layer), inputs)
    assert [o.shape for o in stacked(lambda h: map_to_code(h, w_head, bias), h1, h2)] == [(5, 8), (3, 8)]
