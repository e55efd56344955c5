"""Metadata (MoGE) and STAR routing against their definitions (DQRoute's: test_dqroute.py).

MoGE's equations are tested one by one in test_moge_equations.py.
"""

import pytest
import torch

from gemlab.moe.routers.metadata import MetadataRouter
from gemlab.moe.star import STARHeads, canonical_correlation
from helpers import moge_layer

DIM = 12


def _moge(**options):
    return moge_layer(DIM, **options)


def test_moge_auxiliary_terms_and_gradients():
    router, layer = _moge(cka_weight=0.1, balance_weight=0.01)
    layer.train()
    x = torch.randn(4, 6, DIM, requires_grad=True)
    metadata = torch.tensor([[0.0, 0.0], [45.0, 90.0], [-45.0, -90.0], [10.0, 10.0]])
    y, routing = layer(x, metadata=metadata)
    assert set(routing.aux_losses) == {"balance", "cka"}
    assert all(torch.isfinite(v) for v in routing.aux_losses.values())
    (y.sum() + sum(routing.aux_losses.values())).backward()
    assert x.grad.abs().sum() > 0 and router.keys.grad.abs().sum() > 0 and router.gamma.grad is not None
    y2, _ = layer(torch.randn(4, DIM), metadata=metadata)  # pooled (B, D) features
    assert y2.shape == (4, DIM)


def test_star_gives_two_task_embeddings_and_canonical_correlation_behaves():
    torch.manual_seed(0)
    heads = STARHeads(DIM, 6, num_heads=3, hidden=16)
    out = heads(torch.randn(8, DIM))
    (z_inv, w_inv), (z_eq, _) = out["invariant"], out["equivariant"]
    assert z_inv.shape == z_eq.shape == (8, 6) and not torch.allclose(z_inv, z_eq)
    torch.testing.assert_close(w_inv.sum(1), torch.ones(8))
    z = torch.randn(4000, 3)
    mixed = z @ torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 1.0], [1.0, 0.0, 3.0]])
    assert canonical_correlation(z, mixed).item() == pytest.approx(1.0, abs=1e-3)
    assert canonical_correlation(z, torch.randn(4000, 3)).item() < 0.05


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: MetadataRouter(DIM, 4, k=5), "need k in 1..4"),
        (lambda: MetadataRouter(DIM, 4, cka_weight=-1), "cka_weight"),
        (lambda: STARHeads(DIM, 4, num_heads=1), "at least 2"),
    ],
)
def test_bad_options(build, message):
    with pytest.raises(ValueError) as error:
        build()
    assert message in str(error.value)


def test_metadata_router_needs_metadata():
    _, layer = _moge()
    with pytest.raises(ValueError, match="needs per-sample metadata"):
        layer(torch.randn(2, DIM))
