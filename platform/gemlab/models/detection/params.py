"""How many parameters a model has, and how many one image uses.

    parameter_counts(model)                        # {"total": 47_300_000, "active": 46_800_000}
    parameter_counts(model, experts_per_token=2)   # a top-2 router's layers

"Active" is what the paper's tables compare across MoE variants: the shared
parameters plus ``experts_per_token`` members of every expert bank (an image
of domain d runs only expert ``table[d]`` of each bank under GEM; a top-k
router runs k per token). A worker that holds only some experts counts only
those in ``total``.
"""

from __future__ import annotations

from torch import nn

from gemlab.moe.experts import ExpertBank


def parameter_counts(model: nn.Module, experts_per_token: int = 1) -> dict[str, int]:
    """``{"total": held parameters, "active": shared + the largest ``experts_per_token`` members of each bank}``.

    Raises nothing.
    """
    total = sum(p.numel() for p in model.parameters())
    in_banks, one_each = 0, 0
    for module in model.modules():
        if isinstance(module, ExpertBank) and len(module.members):
            sizes = [sum(p.numel() for p in member.parameters()) for member in module.members.values()]
            in_banks += sum(sizes)
            one_each += sum(sorted(sizes, reverse=True)[:experts_per_token])
    return {"total": total, "active": total - in_banks + one_each}
