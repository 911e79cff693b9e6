"""The field's standard data-pruning methods as small, pure functions over tensors.

Each module holds one idea, with its paper and equation: per-example scores from the warm-up
(``scores``), their per-class ranking (``ranking``), geometry on embeddings (``kcenter``,
``moderate``) and the methods built for high pruning rates (``ccs``, ``d2``, ``dual``). They know
nothing of prune's store or CLI; the method registry wires them in. Scores are float64 and every
random choice comes from a caller's ``torch.Generator``.
"""
