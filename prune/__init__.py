"""prune: shrink a training set to a small, high-value coreset and record it as a manifest."""

__version__ = "0.1.0"
