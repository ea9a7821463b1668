"""The RRDB blocks' in-place arithmetic gives the plain formula's values, and gradients."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mrisr.networks import build_generator
from mrisr.networks.rrdbnet import RDB, RRDB


def _plain_rdb(block: RDB, x: torch.Tensor) -> torch.Tensor:
    feats = [x]
    for conv in block.convs[:-1]:
        feats.append(F.leaky_relu(conv(torch.cat(feats, dim=1)), 0.2))
    return x + 0.2 * block.convs[-1](torch.cat(feats, dim=1))


def _plain_rrdb(block: RRDB, x: torch.Tensor) -> torch.Tensor:
    y = x
    for rdb in block.rdbs:
        y = _plain_rdb(rdb, y)
    return x + 0.2 * y


def test_rrdb_matches_the_plain_formula_on_random_weights():
    torch.manual_seed(0)
    block = RRDB(8, 4)
    for parameter in block.parameters():  # far from the small initialisation
        torch.nn.init.normal_(parameter, std=0.2)
    x = torch.randn(3, 8, 9, 11)
    with torch.inference_mode():
        torch.testing.assert_close(block(x), _plain_rrdb(block, x), rtol=0, atol=1e-6)


def test_generator_gradients_match_the_plain_formula():
    torch.manual_seed(1)
    generator = build_generator("rrdbnet", size="small")
    x = torch.rand(2, 1, 8, 16)
    generator(x, 24).square().mean().backward()
    grads = [p.grad.clone() for p in generator.parameters()]
    generator.zero_grad()
    original = (RDB.forward, RRDB.forward)
    try:
        RDB.forward, RRDB.forward = _plain_rdb, _plain_rrdb
        generator(x, 24).square().mean().backward()
    finally:
        RDB.forward, RRDB.forward = original
    for got, want in zip(grads, (p.grad for p in generator.parameters()), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
