"""Estimators of log p(x) = log ∫ p(x | z) p(z) dz, per point and differentiable in the model."""
