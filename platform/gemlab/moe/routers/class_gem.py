"""Class-level GEM (paper §4.8): route tokens by class, through a learned assignment predictor.

When there are more experts than datasets, the plan assigns *classes* to
experts: the GEM planner (LP and hierarchical rounding) over a class x
expert affinity gives a fixed class -> expert map π. One image can then hold
objects of classes that π sends to different experts, so the choice is made
per token (per decoder query in a detector), not per image. A single linear
layer -- the assignment predictor -- gives each token a distribution over
the experts. It is not trained with a balance loss: the plan is its label.
A token known to belong to class c has the correct expert π(c), and the
predictor is trained with cross-entropy towards it; at inference, where no
class is known, the predicted expert runs.

In training a token with a known class (label >= 0) is sent to π(label)
(teacher forcing: each expert sees exactly its classes) and enters the
``assignment`` loss; a token whose class is unknown (label -1) is sent
where the predictor says, as at inference. A classifier knows the class of
every token (its image's label). A detector knows it for its denoising
positives (the copied object's class); a matching query's class is known
only after Hungarian matching, so the model calls :meth:`ClassGEMRouter.
matched_loss` on those queries' logits (kept on the routing) afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from gemlab.moe.routers.gem import expert_table
from gemlab.moe.routers.topk import check_weights
from gemlab.moe.routing import RoutingContext, SparseRouting
from gemlab.moe.spec import RouterSpec

_IGNORED = -100  # cross_entropy's ignore_index: tokens without a known class


class ClassGEMRouter(nn.Module):
    """Raises ValueError for table entries outside the experts or a negative loss weight."""

    def __init__(self, dim: int, num_experts: int, table: Sequence[int], predictor_weight: float = 1.0) -> None:
        super().__init__()
        table = expert_table(table, num_experts, "class_gem")
        check_weights(predictor_weight=predictor_weight)
        self.register_buffer("table", table, persistent=False)
        self.predictor = nn.Linear(dim, num_experts)
        self.num_experts, self.predictor_weight = num_experts, predictor_weight

    def forward(self, tokens: torch.Tensor, context: RoutingContext) -> SparseRouting:
        """Each token to one expert; the routing keeps the predictor's logits (N, E).

        Raises ValueError in training without ``context.labels``, and IndexError (a device assert on
        a GPU) for a label beyond the table.
        """
        logits = self.predictor(tokens)  # (N, E)
        predicted = logits.argmax(dim=-1)  # (N,)
        if not self.training:
            return SparseRouting.from_choices(predicted.unsqueeze(1), None, self.num_experts, logits=logits)
        if context.labels is None:
            raise ValueError(
                "class_gem router: training needs the class labels of every sample (or token, -1 = unknown)"
            )
        labels = context.labels
        choice = torch.where(labels >= 0, self.table[labels.clamp_min(0)], predicted)  # π(label), else predicted
        aux = {"assignment": self.matched_loss(logits, labels)}
        return SparseRouting.from_choices(choice.unsqueeze(1), None, self.num_experts, aux, logits)

    def matched_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``predictor_weight`` x the mean over tokens with ``labels`` >= 0 of CE(``logits``, π(label)).

        ``logits`` (N, E) are the predictor's, ``labels`` (N,) long, -1 = unknown (no loss). With no
        known label the loss is zero, still in the graph. Raises IndexError (a device assert on a
        GPU) for a label beyond the table.
        """
        known = labels >= 0
        target = torch.where(known, self.table[labels.clamp_min(0)], _IGNORED)
        total = F.cross_entropy(logits, target, ignore_index=_IGNORED, reduction="sum")
        return self.predictor_weight * total / known.sum().clamp_min(1)  # the mean, and 0 (not NaN) over none


SPEC = RouterSpec(
    name="class_gem",
    plan_level="class",
    build=lambda dim, facts, **options: ClassGEMRouter(dim, facts.num_experts, facts.plan_table(), **options),
)
