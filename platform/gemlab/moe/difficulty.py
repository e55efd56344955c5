"""DQRoute's class weights: difficulty from entropy and accuracy, updated multiplicatively, mixed with rarity.

Three rules of DQRoute (seed 004, Sec. 3.1), each a pure function here so a
test can set it beside its transcription:

* Eq. 1, :func:`class_difficulty` -- a class is hard when the model's
  predictions on it are uncertain (high mean entropy ``H_c``) or often wrong
  (low smoothed accuracy ``A_c``): ``d_c = H_c / H_max + λ (1 - A_c / A_max)``.
* Eq. 2, :func:`multiplicative_update` -- the weights of the previous epoch
  are multiplied by ``exp(γ d_c)`` and renormalised to sum to one, so a class
  that stays hard keeps gaining weight epoch after epoch.
* Eq. 3, :func:`mixed_weights` -- ``α w_c + (1 - α) q_c`` with ``q_c`` the
  normalised inverse class frequency.

:class:`ClassDifficulty` keeps the state these rules need as buffers, so it
is checkpointed with the model that holds it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

EPSILON = 1e-12


def class_difficulty(
    entropy: torch.Tensor, accuracy: torch.Tensor, lam: float, a_max: float | None = None
) -> torch.Tensor:
    """DQRoute Eq. 1: per-class difficulty from mean prediction entropy and smoothed accuracy.

        d_c = H_c / H_max + λ (1 - A_c / A_max)

    ``H_max`` is the largest class entropy ``max_c H_c``: the paper writes the
    ratio without defining it, and this choice puts the entropy term in [0, 1]
    whatever the number of classes. ``A_max`` is ``a_max`` when given (1.0 makes
    the second term the error rate) and otherwise ``max_c A_c``, the same
    normalisation as ``H_max``. Both maxima are floored at 1e-12, so a model
    that has seen nothing yet (all zeros) gives ``d_c = λ``. Raises nothing.
    """
    h_max = entropy.max().clamp_min(EPSILON)
    top = accuracy.max() if a_max is None else torch.as_tensor(a_max, dtype=accuracy.dtype)
    return entropy / h_max + lam * (1 - accuracy / top.clamp_min(EPSILON))


def multiplicative_update(weights: torch.Tensor, difficulty: torch.Tensor, gamma: float) -> torch.Tensor:
    """DQRoute Eq. 2: ``w_c ← w_c exp(γ d_c) / Σ_j w_j exp(γ d_j)``: last epoch's weights, scaled and renormalised.

    Computed in log space (a softmax of ``log w + γ d``), so weights that drift
    towards zero after many epochs do not underflow to NaN. Raises nothing.
    """
    return torch.softmax(weights.clamp_min(EPSILON).log() + gamma * difficulty, dim=0)


def mixed_weights(difficulty_weights: torch.Tensor, quantity: torch.Tensor, alpha: float) -> torch.Tensor:
    """DQRoute Eq. 3: ``w̃_c = α w_c + (1 - α) q_c``; both inputs sum to one, so the result does too."""
    return alpha * difficulty_weights + (1 - alpha) * quantity


def quantity_weights(counts: Sequence[int]) -> torch.Tensor:
    """The ``q_c`` of DQRoute Eq. 3: inverse class frequency normalised to sum to one.

    The paper calls ``q_c`` "the normalised quantity-based weight" without its
    form; inverse frequency is the usual one. A class without training images
    counts as one image, so its weight is finite. Raises nothing.
    """
    inverse = 1 / torch.as_tensor(counts, dtype=torch.float32).clamp_min(1)
    return inverse / inverse.sum()


class ClassDifficulty(nn.Module):
    """The per-class statistics and weights of DQRoute's reweighting (Eq. 1-3), as buffers.

    Every training batch adds its per-class entropy and correctness to the
    window sums (:meth:`observe`); after every optimizer step the engine calls
    :meth:`update_state`, and every ``epoch_steps`` steps -- the paper's
    epoch -- the window closes (:meth:`close_epoch`): ``H_c`` becomes the
    window's mean entropy, ``A_c`` is smoothed with ``momentum``, and the
    weights take one step of Eq. 2. :meth:`class_weights` is Eq. 3 scaled by
    the number of classes, so uniform weights are all 1 and a weighted loss
    equals the plain one.

    Data-parallel ranks: :meth:`synchronised_state` names the window sums,
    which the engine (:mod:`gemlab.engine.router_state`) replaces by their
    mean over the ranks after every step, before :meth:`update_state`. A
    ratio of means is the ratio of sums, so the closed window is the world's
    statistics, every rank applies Eq. 1-2 to the same numbers, and
    ``accuracy``, ``entropy`` and ``weights`` stay equal on every rank (the
    engine's mean of all buffers before an evaluation leaves them as they
    are). The step counter is an integer buffer that every rank advances
    alike. Raises ValueError for ``momentum`` outside [0, 1),
    ``alpha`` outside [0, 1], ``a_max`` outside (0, 1], ``epoch_steps`` < 1 or
    ``lam`` < 0.
    """

    def __init__(
        self,
        counts: Sequence[int],
        gamma: float = 1.0,
        lam: float = 1.0,
        alpha: float = 0.5,
        momentum: float = 0.9,
        a_max: float | None = None,
        epoch_steps: int = 1,
    ) -> None:
        super().__init__()
        checks = {
            "momentum": 0 <= momentum < 1,
            "alpha": 0 <= alpha <= 1,
            "a_max": a_max is None or 0 < a_max <= 1,
            "epoch_steps": isinstance(epoch_steps, int) and epoch_steps >= 1,
            "lam": lam >= 0,
        }
        bad = [key for key, ok in checks.items() if not ok]
        if bad:
            values = {"momentum": momentum, "alpha": alpha, "a_max": a_max, "epoch_steps": epoch_steps, "lam": lam}
            raise ValueError(
                f"class difficulty: {bad[0]}={values[bad[0]]!r}: need 0 <= momentum < 1, 0 <= alpha <= 1, "
                "a_max null or in (0, 1], epoch_steps an integer >= 1, lam >= 0"
            )
        classes = len(counts)
        self.register_buffer("quantity", quantity_weights(counts))  # q_c, sums to 1
        self.register_buffer("weights", torch.full((classes,), 1 / classes))  # w_c^(t), sums to 1
        self.register_buffer("accuracy", torch.zeros(classes))  # A_c, smoothed over epochs
        self.register_buffer("entropy", torch.zeros(classes))  # H_c of the last closed epoch
        self.register_buffer("window_entropy", torch.zeros(classes))  # Σ entropy over this epoch's samples
        self.register_buffer("window_correct", torch.zeros(classes))  # Σ 1[argmax = y] over them
        self.register_buffer("window_seen", torch.zeros(classes))  # samples of each class this epoch
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.gamma, self.lam, self.alpha, self.momentum = gamma, lam, alpha, momentum
        self.a_max, self.epoch_steps = a_max, epoch_steps

    def class_weights(self) -> torch.Tensor:
        """(C,) DQRoute Eq. 3's ``w̃`` times C: mean 1, the factor applied to each sample's loss by its class."""
        return mixed_weights(self.weights, self.quantity, self.alpha) * len(self.weights)

    @torch.no_grad()
    def observe(self, probs: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a training batch's predicted class probabilities (B, C) to the window sums."""
        entropy = -(probs * probs.clamp_min(EPSILON).log()).sum(dim=-1)
        correct = (probs.argmax(dim=-1) == labels).to(probs.dtype)
        self.window_entropy.index_add_(0, labels, entropy)
        self.window_correct.index_add_(0, labels, correct)
        self.window_seen.index_add_(0, labels, torch.ones_like(entropy))

    def synchronised_state(self) -> list[torch.Tensor]:
        """The window sums: what data-parallel ranks average after every step (sums, so the mean is the world's)."""
        return [self.window_entropy, self.window_correct, self.window_seen]

    @torch.no_grad()
    def update_state(self) -> None:
        """One optimizer step done: every ``epoch_steps`` steps, close the window (:meth:`close_epoch`)."""
        self.steps += 1
        if int(self.steps) % self.epoch_steps == 0:
            self.close_epoch()

    @torch.no_grad()
    def close_epoch(self) -> None:
        """End of an epoch: ``H_c``, ``A_c`` from the window (classes it saw), then one step of Eq. 2."""
        seen = self.window_seen > 0
        mean_entropy = self.window_entropy / self.window_seen.clamp_min(1)
        accuracy = self.window_correct / self.window_seen.clamp_min(1)
        self.entropy.copy_(torch.where(seen, mean_entropy, self.entropy))
        smoothed = self.momentum * self.accuracy + (1 - self.momentum) * accuracy
        self.accuracy.copy_(torch.where(seen, smoothed, self.accuracy))
        difficulty = class_difficulty(self.entropy, self.accuracy, self.lam, self.a_max)
        self.weights.copy_(multiplicative_update(self.weights, difficulty, self.gamma))
        for window in (self.window_entropy, self.window_correct, self.window_seen):
            window.zero_()
