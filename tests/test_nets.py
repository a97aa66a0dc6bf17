"""DCGAN-type encoder and generator: shapes, output range, size checks, initialisation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from agelab.nets.dcgan import DCGANEncoder, DCGANGenerator


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_generator_output_shape_and_range(size, channels):
    g = DCGANGenerator(latent_dim=6, channels=channels, image_size=size, width=4)
    z = torch.randn(5, 6)
    x = g(z)
    assert x.shape == (5, channels, size, size)
    assert x.min() >= -1 and x.max() <= 1
    # even for huge codes and large weights the tanh keeps the range
    with torch.no_grad():
        for p in g.parameters():
            p.mul_(50)
    x = g(1e3 * z)
    assert torch.isfinite(x).all() and x.min() >= -1 and x.max() <= 1


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_encoder_output_shape(size, channels):
    e = DCGANEncoder(latent_dim=7, channels=channels, image_size=size, width=4)
    h = e(torch.rand(3, channels, size, size) * 2 - 1)
    assert h.shape == (3, 7)
    assert torch.isfinite(h).all()


def test_generator_accepts_flat_or_4d_codes():
    g = DCGANGenerator(latent_dim=4, channels=1, image_size=32, width=4).eval()
    z = torch.randn(2, 4)
    assert torch.equal(g(z), g(z.view(2, 4, 1, 1)))


def test_number_of_stride2_stages_follows_image_size():
    for size, stages in ((16, 2), (32, 3), (64, 4)):
        g = DCGANGenerator(latent_dim=4, channels=1, image_size=size, width=4)
        e = DCGANEncoder(latent_dim=4, channels=1, image_size=size, width=4)
        up = [m for m in g.modules() if isinstance(m, nn.ConvTranspose2d) and m.stride == (2, 2)]
        down = [m for m in e.modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
        assert len(up) == len(down) == stages
        # the widest maps have width * 2^(stages - 1) channels, at 4x4
        assert up[0].in_channels == down[-1].out_channels == 4 * 2 ** (stages - 1)


@pytest.mark.parametrize("bad", [48, 8, 100, 0])
def test_invalid_image_size_raises(bad):
    with pytest.raises(ValueError):
        DCGANGenerator(latent_dim=4, channels=1, image_size=bad, width=4)
    with pytest.raises(ValueError):
        DCGANEncoder(latent_dim=4, channels=1, image_size=bad, width=4)


def test_dcgan_initialisation():
    torch.manual_seed(0)
    e = DCGANEncoder(latent_dim=8, channels=3, image_size=64, width=16)
    convs = [m for m in e.modules() if isinstance(m, nn.Conv2d)]
    w = torch.cat([m.weight.flatten() for m in convs])
    assert abs(w.mean().item()) < 2e-3 and w.std().item() == pytest.approx(0.02, rel=0.05)
    assert all(m.bias is None or torch.equal(m.bias, torch.zeros_like(m.bias)) for m in convs)
    bns = [m for m in e.modules() if isinstance(m, nn.BatchNorm2d)]
    scales = torch.cat([m.weight for m in bns])
    assert abs(scales.mean().item() - 1) < 0.01 and torch.equal(torch.cat([m.bias for m in bns]), torch.zeros_like(scales))


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("size", [32, 64])
def test_matmul_forms_of_the_end_layers_equal_the_convolutions(size, channels_last):
    """g's first layer and e's head run as matrix products: the same values and gradients as the layer stacks."""
    torch.manual_seed(0)
    gen, enc = DCGANGenerator(8, 3, size, 8), DCGANEncoder(8, 3, size, 8)
    if channels_last:
        gen, enc = gen.to(memory_format=torch.channels_last), enc.to(memory_format=torch.channels_last)
    z = torch.randn(5, 8, requires_grad=True)
    out = gen(z)
    ref = gen.net(z.view(5, 8, 1, 1))
    assert out.is_contiguous(memory_format=torch.channels_last) == channels_last
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    (g_out,) = torch.autograd.grad(out.square().sum(), z)
    (g_ref,) = torch.autograd.grad(ref.square().sum(), z)
    torch.testing.assert_close(g_out, g_ref, rtol=1e-4, atol=1e-6)
    x = torch.randn(5, 3, size, size)
    code, ref_code = enc(x), enc.head(enc.features(x)).flatten(1)
    torch.testing.assert_close(code, ref_code, rtol=1e-5, atol=1e-5)
    w_out = torch.autograd.grad(code.sum(), enc.head.weight)[0]
    w_ref = torch.autograd.grad(ref_code.sum(), enc.head.weight)[0]
    torch.testing.assert_close(w_out, w_ref, rtol=1e-4, atol=1e-5)


def _grads(loss: torch.Tensor, module: nn.Module) -> dict[str, torch.Tensor]:
    names = [n for n, p in module.named_parameters()]
    return dict(zip(names, torch.autograd.grad(loss, list(module.parameters()))))


def _assert_same_sums(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Equal to float tolerance relative to each tensor's scale (sums over batches, taken in another order)."""
    assert a.keys() == b.keys()
    for k in b:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5 * float(b[k].abs().max()) + 1e-7)


@pytest.mark.parametrize("channels_last", [False, True])
def test_forward_two_equals_two_forwards(channels_last):
    """Stacking two batches for the end layers' products changes nothing: outputs, weight gradients and
    running statistics equal two separate calls (batch norm normalises each batch on its own)."""
    from agelab.models.age import frozen_bn_stats

    def nets():
        torch.manual_seed(0)
        gen, enc = DCGANGenerator(8, 3, 32, 8), DCGANEncoder(8, 3, 32, 8)
        if channels_last:
            gen, enc = gen.to(memory_format=torch.channels_last), enc.to(memory_format=torch.channels_last)
        return gen, enc

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    z1, z2 = torch.randn(5, 8), torch.randn(3, 8)  # batches of different sizes: the split must follow them
    x1 = torch.randn(5, 3, 32, 32).contiguous(memory_format=fmt)
    x2 = torch.randn(3, 3, 32, 32).contiguous(memory_format=fmt)
    (gen_a, enc_a), (gen_b, enc_b) = nets(), nets()

    a1, a2 = gen_a.forward_two(z1, z2)
    b1, b2 = gen_b(z1), gen_b(z2)
    for a, b in ((a1, b1), (a2, b2)):
        assert a.shape == b.shape and a.is_contiguous(memory_format=torch.channels_last) == channels_last
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    _assert_same_sums(_grads(a1.square().sum() + (a2 - 0.3).abs().sum(), gen_a),
                      _grads(b1.square().sum() + (b2 - 0.3).abs().sum(), gen_b))
    _assert_same_sums(gen_a.state_dict(), gen_b.state_dict())  # running statistics: z1's batch, then z2's

    c1, c2 = enc_a.forward_two(x1, x2, second=frozen_bn_stats(enc_a))
    d1 = enc_b(x1)
    with frozen_bn_stats(enc_b):
        d2 = enc_b(x2)
    torch.testing.assert_close(c1, d1, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(c2, d2, rtol=1e-5, atol=1e-5)
    _assert_same_sums(_grads(c1.square().sum() - c2.sum(), enc_a), _grads(d1.square().sum() - d2.sum(), enc_b))
    _assert_same_sums(enc_a.state_dict(), enc_b.state_dict())  # x2's pass left the running statistics alone
