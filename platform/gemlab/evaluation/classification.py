"""Classification: accuracy, mean cross-entropy, macro-F1 and the accuracy of many-, medium- and few-shot classes.

The evaluator keeps per-class counts (hits, support, predictions), so every
class-level metric comes from one pass over the split:

* macro-F1 is WILDS' F1-macro (the metric the MoGE paper reports on
  iWildCam): the mean over the classes present in the split's labels of
  F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c). A class that is only predicted,
  never true, adds no term of its own (WILDS passes ``labels=unique(y_true)``
  to scikit-learn); its false predictions still cost the true classes' recall.
* many/medium/few-shot accuracy (the long-tail protocol of OLTR and the
  DQRoute paper): classes are grouped by their training-image count (many:
  more than :data:`MANY_SHOT_ABOVE`, few: fewer than :data:`FEW_SHOT_BELOW`,
  medium: the rest), and a group's accuracy is the mean over its classes of
  the per-class accuracy; classes with no test sample are skipped, and a
  group with no class left is NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from gemlab.results_schema import (
    ACCURACY,
    FEW_SHOT_ACCURACY,
    LOSS,
    MACRO_F1,
    MANY_SHOT_ACCURACY,
    MEDIUM_SHOT_ACCURACY,
)

MANY_SHOT_ABOVE = 100  # a class with more training images than this is many-shot
FEW_SHOT_BELOW = 20  # a class with fewer training images than this is few-shot; 20..100 is medium-shot


def shot_groups(class_counts: Sequence[int]) -> dict[str, list[int]]:
    """Metric name (``many_shot_accuracy`` ...) -> its classes, by training-image count; raises nothing."""
    groups: dict[str, list[int]] = {MANY_SHOT_ACCURACY: [], MEDIUM_SHOT_ACCURACY: [], FEW_SHOT_ACCURACY: []}
    for c, count in enumerate(class_counts):
        if count > MANY_SHOT_ABOVE:
            groups[MANY_SHOT_ACCURACY].append(c)
        elif count < FEW_SHOT_BELOW:
            groups[FEW_SHOT_ACCURACY].append(c)
        else:
            groups[MEDIUM_SHOT_ACCURACY].append(c)
    return groups


class AccuracyEvaluator:
    """Top-1 accuracy, mean cross-entropy (nats per sample) and macro-F1 of the processed batches.

    With ``class_counts`` (training images per class, as
    :func:`gemlab.engine.model.class_counts` gives them) ``evaluate`` adds the many/medium/few-shot
    accuracies. Every metric is NaN when nothing was processed (there is no accuracy of no samples).
    """

    def __init__(self, class_counts: Sequence[int] | None = None) -> None:
        self.class_counts = None if class_counts is None else list(class_counts)
        self.reset()

    def reset(self) -> None:
        self._correct, self._loss, self._count = 0, 0.0, 0
        self._tally: torch.Tensor | None = None  # (3, C): hits, support, predictions per class; sized by a batch

    @torch.no_grad()
    def process(self, labels: torch.Tensor, logits: torch.Tensor) -> None:
        """Add one batch: (N,) class indices and (N, C) logits.

        Raises ValueError when the shapes do not fit each other, earlier batches or ``class_counts``;
        labels outside ``0..C-1`` raise as in ``torch.nn.functional.cross_entropy``.
        """
        if logits.dim() != 2 or labels.shape != logits.shape[:1]:
            raise ValueError(
                f"accuracy: need labels (N,) and logits (N, C), got {tuple(labels.shape)}, {tuple(logits.shape)}"
            )
        classes = logits.shape[1]
        if self.class_counts is not None and len(self.class_counts) != classes:
            raise ValueError(f"accuracy: {len(self.class_counts)} class counts for logits of {classes} classes")
        if self._tally is not None and self._tally.shape[1] != classes:
            raise ValueError(f"accuracy: logits of {classes} classes after batches of {self._tally.shape[1]}")
        labels = labels.to(logits.device).long()
        loss = float(F.cross_entropy(logits.float(), labels, reduction="sum"))  # raises for a label out of range
        predicted = logits.argmax(dim=1)
        right = predicted == labels
        tally = torch.stack([torch.bincount(x, minlength=classes) for x in (labels[right], labels, predicted)]).cpu()
        self._tally = tally if self._tally is None else self._tally + tally
        self._correct += int(right.sum())
        self._loss += loss
        self._count += len(labels)

    def evaluate(self) -> dict[str, float]:
        """``accuracy``, ``loss``, ``macro_f1`` (and the shot groups' accuracies with ``class_counts``)."""
        names = [ACCURACY, LOSS, MACRO_F1, *([] if self.class_counts is None else shot_groups(self.class_counts))]
        if self._count == 0:
            return dict.fromkeys(names, float("nan"))
        hits, support, predicted = self._tally.double()
        present = support > 0
        f1 = 2 * hits / (support + predicted).clamp_min(1)
        metrics = {
            ACCURACY: self._correct / self._count,
            LOSS: self._loss / self._count,
            MACRO_F1: float(f1[present].mean()),
        }
        if self.class_counts is not None:
            per_class = hits / support.clamp_min(1)
            for name, classes in shot_groups(self.class_counts).items():
                tested = [c for c in classes if present[c]]
                metrics[name] = float(per_class[tested].mean()) if tested else float("nan")
        return metrics
