"""The CPU fast paths of the DIP network compute the same convolution, concatenation and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medrecon.priors import dip

CL = torch.channels_last


@pytest.mark.parametrize(
    "k, n, c_in, c_out, h, w",
    [(3, 1, 52, 48, 12, 12), (3, 2, 5, 3, 7, 9), (1, 2, 5, 3, 7, 9), (3, 1, 4, 6, 3, 2), (1, 1, 48, 1, 5, 4)],
)
def test_fast_conv_matches_conv2d(k, n, c_in, c_out, h, w):
    gen = torch.Generator().manual_seed(0)
    layer = dip._Conv(c_in, c_out, k).double()
    with torch.no_grad():
        layer.conv.weight.copy_(torch.randn(layer.conv.weight.shape, generator=gen))
        layer.conv.bias.copy_(torch.randn(layer.conv.bias.shape, generator=gen))
    layer = layer.to(memory_format=CL)
    x = torch.randn(n, c_in, h, w, generator=gen, dtype=torch.float64).to(memory_format=CL)
    x.requires_grad_(True)
    out = layer(x)
    assert out.is_contiguous(memory_format=CL)
    g = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    grads = torch.autograd.grad(out, (x, layer.conv.weight, layer.conv.bias), g)
    # the reference: F.conv2d on the same padded input in the default layout
    xr = x.detach().contiguous().requires_grad_(True)
    pad = (k - 1) // 2
    xp = F.pad(xr, (pad,) * 4, mode="reflect" if min(h, w) > pad else "replicate") if pad else xr
    wr = layer.conv.weight.detach().contiguous().requires_grad_(True)
    br = layer.conv.bias.detach().clone().requires_grad_(True)
    ref = F.conv2d(xp, wr, br)
    ref_grads = torch.autograd.grad(ref, (xr, wr, br), g.contiguous())
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_conv_weight_grad_is_the_correlation_of_input_and_output_gradient():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 6, 7, generator=gen, dtype=torch.float64).to(memory_format=CL)
    g = torch.randn(2, 4, 4, 5, generator=gen, dtype=torch.float64).to(memory_format=CL)
    want = torch.einsum("nohw,nihw->oi", g, x[:, :, 1:5, 2:7])  # kernel offset (dy, dx) = (1, 2)
    torch.testing.assert_close(dip._conv_weight_grad(x, g, 3)[:, :, 1, 2], want)


def test_cat_channels_gives_dense_gradients_in_each_layout():
    a = torch.randn(1, 4, 5, 6).to(memory_format=CL).requires_grad_(True)
    b = torch.randn(1, 7, 5, 6).requires_grad_(True)
    out = dip._CatChannels.apply(a, b)
    torch.testing.assert_close(out, torch.cat([a, b], 1), rtol=0, atol=0)
    g = torch.randn(out.shape).to(memory_format=CL)
    ga, gb = torch.autograd.grad(out, (a, b), g)
    assert ga.is_contiguous(memory_format=CL) and gb.is_contiguous()
    torch.testing.assert_close(ga, g[:, :4], rtol=0, atol=0)
    torch.testing.assert_close(gb, g[:, 4:], rtol=0, atol=0)


def test_hourglass_channels_last_equals_default_layout():
    """The whole network with the fast paths (channels-last) against the plain layers (default layout)."""
    net = dip.Hourglass(8, 1, depth=3, channels=6, generator=torch.Generator().manual_seed(0)).double()
    z = torch.rand(1, 8, 20, 18, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    fast = net.to(memory_format=CL)
    out = fast(z.to(memory_format=CL))
    grads = torch.autograd.grad(out.square().sum(), list(fast.parameters()))
    plain = dip.Hourglass(8, 1, depth=3, channels=6, generator=torch.Generator().manual_seed(0)).double()
    ref = plain(z)
    ref_grads = torch.autograd.grad(ref.square().sum(), list(plain.parameters()))
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-10)
