"""Evaluators: objects that take a split's predictions batch by batch and give its metrics.

Every task's evaluator follows one protocol (:class:`Evaluator`, after
detectron2's ``DatasetEvaluator``): ``reset()``, ``process(...)`` once per
batch, ``evaluate() -> {metric: value}``. Classification has
:class:`AccuracyEvaluator`; detection has
:class:`gemlab.evaluation.coco.CocoEvaluator` (imported from its module, as
it loads pycocotools).
"""

from gemlab.evaluation.base import Evaluator
from gemlab.evaluation.classification import AccuracyEvaluator

__all__ = ["AccuracyEvaluator", "Evaluator"]
