"""Classification: accuracy and mean cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F


class AccuracyEvaluator:
    """Top-1 accuracy and mean cross-entropy (nats per sample) of the processed batches.

    ``evaluate`` gives ``{"accuracy", "loss"}``, both NaN when nothing was
    processed (there is no accuracy of no samples).
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._correct, self._loss, self._count = 0, 0.0, 0

    @torch.no_grad()
    def process(self, labels: torch.Tensor, logits: torch.Tensor) -> None:
        """Add one batch: (N,) class indices and (N, C) logits.

        Raises ValueError when the shapes do not fit; labels outside
        ``0..C-1`` raise as in ``torch.nn.functional.cross_entropy``.
        """
        if logits.dim() != 2 or labels.shape != logits.shape[:1]:
            raise ValueError(
                f"accuracy: need labels (N,) and logits (N, C), got {tuple(labels.shape)}, {tuple(logits.shape)}"
            )
        labels = labels.to(logits.device).long()
        self._correct += int((logits.argmax(dim=1) == labels).sum())
        self._loss += float(F.cross_entropy(logits.float(), labels, reduction="sum"))
        self._count += len(labels)

    def evaluate(self) -> dict[str, float]:
        if self._count == 0:
            return {"accuracy": float("nan"), "loss": float("nan")}
        return {"accuracy": self._correct / self._count, "loss": self._loss / self._count}
