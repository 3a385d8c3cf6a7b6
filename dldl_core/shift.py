"""How a labelled set would score if its faces were drawn like another, unlabelled set's.

No age-labelled in-the-wild photos are here, but unlabelled ones are (AFLW). A logistic classifier
tells apart the model's features of faces from the two (``DomainClassifier``); for a labelled face
its odds of belonging to the unlabelled set, times the ratio of the two training samples' sizes,
estimate how much more often such a face occurs there (the density ratio of covariate shift), and
weighing each labelled face's error by it estimates the error on the unlabelled set's kind of face
(importance weighting). It sees only what the features see: a shift of who is in the photos or of
how ages were labelled does not show in it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class DomainClassifier:
    """A linear logistic classifier of standardised features: positive means the target domain."""

    mean: torch.Tensor
    scale: torch.Tensor
    coef: torch.Tensor
    bias: torch.Tensor
    prior: float  # source samples per target sample in the fit, which the odds are corrected by

    @classmethod
    def fit(cls, source: torch.Tensor, target: torch.Tensor, weight_decay: float = 0.1, max_iter: int = 500) -> DomainClassifier:
        """Fit on (N, D) ``source`` and (M, D) ``target`` features by L-BFGS on the mean logistic
        loss plus ``weight_decay`` times the squared coefficients (of standardised features)."""
        x = torch.cat([source, target]).double()
        mean, scale = x.mean(0), x.std(0).clamp_min(1e-6)
        x = (x - mean) / scale
        y = torch.cat([torch.zeros(len(source)), torch.ones(len(target))]).double()
        coef = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
        bias = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([coef, bias], max_iter=max_iter, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = nn.functional.binary_cross_entropy_with_logits(x @ coef + bias, y) + weight_decay * coef.square().sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            opt.step(closure)
        return cls(mean, scale, coef.detach(), bias.detach(), len(source) / len(target))

    def logit(self, features: torch.Tensor) -> torch.Tensor:
        """(N,) log-odds that each face comes from the target domain."""
        return ((features.double() - self.mean) / self.scale) @ self.coef + self.bias

    def weights(self, features: torch.Tensor) -> torch.Tensor:
        """(N,) importance weights of source faces: the estimated density ratio target / source."""
        return (self.logit(features).exp() * self.prior).float()


def effective_size(weights: torch.Tensor) -> float:
    """Kish's effective sample size of ``weights``: how many equally weighed faces they are worth."""
    return float(weights.sum() ** 2 / weights.square().sum())


def weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> float:
    """The ``weights``-weighted mean of ``values``."""
    return float((values.double() * weights).sum() / weights.sum())

