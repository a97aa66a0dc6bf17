"""The image end of the DCGAN nets as matrix products (agelab.nets.narrow): the convolutions' values and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from agelab.nets.narrow import _FromImage, _ToImage, conv_transpose_s2, from_image, to_image

CL = torch.channels_last


def _layout(t: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return t.contiguous(memory_format=CL) if channels_last else t.contiguous()


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
    torch.testing.assert_close(out, F.conv_transpose2d(x, w, stride=2, padding=1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("needs", ["both", "input", "weight"])
def test_layers_give_the_convolutions_values_and_gradients(needs, channels_last):
    torch.manual_seed(1)
    h = _layout(torch.randn(6, 16, 8, 8), channels_last)  # generator side: 16 channels -> 3 image channels
    img = _layout(torch.randn(6, 3, 16, 16), channels_last)  # encoder side: 3 image channels -> 16
    w_g = _layout(torch.randn(16, 3, 4, 4) * 0.1, channels_last)
    w_e = _layout(torch.randn(16, 3, 4, 4) * 0.1, channels_last)
    cases = [(to_image, lambda x, w: F.conv_transpose2d(x, w, stride=2, padding=1), h, w_g),
             (from_image, lambda x, w: F.conv2d(x, w, stride=2, padding=1), img, w_e)]
    for layer, reference, x, w in cases:
        x = x.clone().requires_grad_(needs in ("both", "input"))
        w = w.clone().requires_grad_(needs in ("both", "weight"))
        out, ref = layer(x, w), reference(x, w)
        assert out.grad_fn is not None and type(out.grad_fn).__name__ in ("_ToImageBackward", "_FromImageBackward")
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        upstream = torch.randn_like(ref)
        inputs = [t for t in (x, w) if t.requires_grad]
        got = torch.autograd.grad(out, inputs, upstream)
        want = torch.autograd.grad(ref, inputs, upstream)
        for g, r in zip(got, want):
            torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4)


def test_backward_passes_are_the_adjoints_in_double_precision():
    torch.manual_seed(2)
    x = torch.randn(2, 5, 3, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_ToImage.apply, (x, w))
    img = torch.randn(2, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    w_e = torch.randn(5, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_FromImage.apply, (img, w_e))


def test_other_settings_run_the_plain_convolutions():
    # more than 4 image channels, float64, or bf16 autocast: the library's convolution, bit for bit
    x, w = torch.randn(2, 8, 4, 4), torch.randn(8, 5, 4, 4)
    assert torch.equal(to_image(x, w), F.conv_transpose2d(x, w, stride=2, padding=1))
    x64, w64 = x.double(), torch.randn(8, 3, 4, 4, dtype=torch.float64)
    assert torch.equal(to_image(x64, w64), F.conv_transpose2d(x64, w64, stride=2, padding=1))
    w3 = torch.randn(8, 3, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = to_image(x, w3)
        assert out.dtype == torch.bfloat16
        assert torch.equal(out, F.conv_transpose2d(x, w3, stride=2, padding=1))
    img = torch.randn(2, 3, 8, 8, requires_grad=True)
    assert type(from_image(img, torch.randn(8, 3, 4, 4)).grad_fn).__name__ == "_FromImageBackward"
    assert type(from_image(torch.randn(2, 6, 8, 8), torch.randn(8, 6, 4, 4)).grad_fn).__name__ != "_FromImageBackward"
