"""CREST's quadratic model of the loss (eq. 6, 10), built on the last layer at each selection."""

from __future__ import annotations

import torch

from prune import features
from prune.models import last_layer_matrix


class Quadratic:
    """F(delta) = L_r(w) + <g_S, delta> + 1/2 sum lambda_S delta^2 on the last layer, built at selection."""

    def __init__(self, model, x, labels, union: torch.Tensor, weights: torch.Tensor, sample: torch.Tensor,
                 batch_size: int, device):
        feats = features.extract_features(model, x[union], labels[union], batch_size=batch_size, device=device)
        w = weights.double()[:, None] / weights.double().sum()
        h = features.with_bias(feats["embedding"].double())
        self.grad = (w * feats["grad_logit"].double()).T @ h          # (C, e + 1)
        self.hess = (w * feats["hess_logit"].double()).T @ (h * h)     # (C, e + 1)
        self.w0 = last_layer_matrix(model)
        self.sample = sample
        self.loss0, self.hess_norm = self.sample_loss(model, x, labels, batch_size, device)
        self.forward_examples = len(union) + len(sample)

    def sample_loss(self, model, x, labels, batch_size, device) -> tuple[float, float]:
        """Mean loss on V_r, and the norm of V_r's mean last-layer Hessian diagonal."""
        feats = features.extract_features(model, x[self.sample], labels[self.sample], batch_size=batch_size,
                                          device=device)
        h = features.with_bias(feats["embedding"].double())
        hess = feats["hess_logit"].double().T @ (h * h) / len(self.sample)
        return float(feats["loss"].double().mean()), float(hess.norm())

    def rho(self, model, x, labels, batch_size, device) -> tuple[float, float]:
        delta = last_layer_matrix(model) - self.w0
        model_value = self.loss0 + float((self.grad * delta).sum()) + 0.5 * float((self.hess * delta * delta).sum())
        actual, hess_norm = self.sample_loss(model, x, labels, batch_size, device)
        return abs(model_value - actual) / max(actual, 1e-12), hess_norm
