"""DCGAN-type encoder and generator: shapes, output range, size checks, initialisation, their layers and fast forms."""

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


def _nets(size=32, channels_last=False):
    torch.manual_seed(0)
    gen, enc = DCGANGenerator(8, 3, size, 8), DCGANEncoder(8, 3, size, 8)
    if channels_last:
        gen, enc = gen.to(memory_format=torch.channels_last), enc.to(memory_format=torch.channels_last)
    return gen, enc


def _layers_called(net: nn.Module, run) -> list[str]:
    """The names of the net's layers whose forward hooks fire while ``run()`` runs, in order."""
    called = []
    handles = [m.register_forward_hook(lambda m, i, o, name=name: called.append(name))
               for name, m in net.named_modules() if not list(m.children())]
    run()
    for h in handles:
        h.remove()
    return called


def test_a_net_runs_its_layers_as_written_and_with_fast_all_but_its_end_layers():
    """As built, forward is the layer stack: every layer runs, in order (so print(net) and hooks tell the truth).
    With ``fast``, the end layers' weights go to agelab.ops' forms and every other layer still runs."""
    gen, enc = _nets()
    z, x = torch.randn(2, 8), torch.randn(2, 3, 32, 32)
    layers = {gen: [f"net.{i}" for i in range(len(gen.net))],
              enc: [f"features.{i}" for i in range(len(enc.features))] + ["head"]}
    ends = {gen: {"net.0", f"net.{len(gen.net) - 2}"}, enc: {"features.0", "head"}}
    for net, inp in ((gen, z), (enc, x)):
        assert not net.fast
        assert _layers_called(net, lambda: net(inp)) == layers[net]
        net.fast = True
        assert _layers_called(net, lambda: net(inp)) == [n for n in layers[net] if n not in ends[net]]
        assert "fast=True" in repr(net)  # print(net) says which path runs
    assert "Tanh()" in repr(gen) and isinstance(gen.net[-1], nn.Tanh)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("which", ["generator", "encoder"])
def test_fast_forms_of_the_nets_equal_their_layers(which, size, channels_last):
    """Output, input and weight gradients, and batch norm's running statistics of a fast net equal those of the same
    net running its layers, to 2e-5 of each tensor's norm. Rounding gives up to 1.3e-6 (AMD EPYC, 2026-12-02): more
    than one op's (tests/test_ops.py, which says why such tolerances hold on any x86-64 CPU) because gradients through
    batch norm of 5 images amplify it. The output keeps the net's memory layout."""
    torch.manual_seed(1)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    inp = torch.randn(5, 8) if which == "generator" else torch.randn(5, 3, size, size).contiguous(memory_format=fmt)
    results = []
    for fast in (False, True):
        net = _nets(size, channels_last)[which == "encoder"]
        net.fast = fast
        x = inp.clone().requires_grad_()
        out = net(x)
        if which == "generator":
            assert out.is_contiguous(memory_format=torch.channels_last) == channels_last
        grads = torch.autograd.grad((out - 0.3).square().sum(), [x, *net.parameters()])
        results.append([out, *grads, *(b.clone() for b in net.buffers() if b.is_floating_point())])
    plain, fast = results
    assert len(plain) == len(fast)
    for a, b in zip(fast, plain):
        assert _rel(a, b) < 2e-5


@pytest.mark.parametrize("size", [32, 64])
def test_the_authors_style_ends(size):
    """--nets authors: g ends in a full-resolution stage at w channels and a 1x1 convolution, e's head is a stride-2
    convolution to (M, 2, 2) and 2x2 average pooling; the stages between are the same as the default style's."""
    torch.manual_seed(0)
    g = DCGANGenerator(latent_dim=6, channels=3, image_size=size, width=4, style="authors")
    e = DCGANEncoder(latent_dim=7, channels=3, image_size=size, width=4, style="authors")
    x = g(torch.randn(5, 6))
    assert x.shape == (5, 3, size, size) and x.min() >= -1 and x.max() <= 1
    last = g.net[-2]
    assert isinstance(last, nn.Conv2d) and last.kernel_size == (1, 1) and last.in_channels == 4 and last.bias is not None
    full = g.net[-5]  # the full-resolution stage keeps w channels
    assert isinstance(full, nn.ConvTranspose2d) and full.in_channels == full.out_channels == 4
    assert e(x).shape == (5, 7)
    assert isinstance(e.head[0], nn.Conv2d) and e.head[0].stride == (2, 2) and isinstance(e.head[1], nn.AvgPool2d)
    plain_g = DCGANGenerator(latent_dim=6, channels=3, image_size=size, width=4)
    plain_e = DCGANEncoder(latent_dim=7, channels=3, image_size=size, width=4)
    assert [p.shape for p in g.net[:-5].parameters()] == [p.shape for p in plain_g.net[:-2].parameters()]
    assert [p.shape for p in e.features.parameters()] == [p.shape for p in plain_e.features.parameters()]
    assert "style=authors" in repr(g) and "style=authors" in repr(e)
    with pytest.raises(ValueError, match="net style"):
        DCGANGenerator(latent_dim=6, channels=3, style="resnet")


@pytest.mark.parametrize("which", ["generator", "encoder"])
def test_the_authors_style_fast_form_equals_its_layers(which):
    torch.manual_seed(2)
    inp = torch.randn(5, 8) if which == "generator" else torch.randn(5, 3, 32, 32)
    outs = []
    for fast in (False, True):
        torch.manual_seed(3)
        cls = DCGANGenerator if which == "generator" else DCGANEncoder
        net = cls(latent_dim=8, channels=3, image_size=32, width=4, style="authors")
        net.fast = fast
        x = inp.clone().requires_grad_()
        out = net(x)
        outs.append([out, *torch.autograd.grad(out.square().sum(), [x, *net.parameters()])])
    for a, b in zip(*outs):
        assert _rel(a, b) < 2e-5
