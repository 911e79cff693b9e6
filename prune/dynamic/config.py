"""The knobs of a dynamic run (``DynamicConfig``), checked, and the names of its random streams."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from prune.errors import PruneError
from prune.features import POSTERIOR_LAYERS
from prune.selection import exact_fraction
from prune.selection.difficulty import parse_drop_hard

DYNAMIC_KINDS = ("ensemble", "crest", "random")
UPDATE_RULES = ("every", "crest")
#: the messages name the options' flags; a Python caller reads the fields' names (``prune.errors.PruneError``)
PARAMETERS = {"--dynamic": "kind"}


@dataclass(frozen=True)
class DynamicConfig:
    """The knobs of one dynamic run, checked at construction; recorded verbatim in the subset log's ``settings``."""

    kind: str
    fraction: float = 0.1
    epochs: int = 20
    batch_size: int = 128          # m: mini-batch = coreset size
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    subset_size: int = 500         # r: size of each random subset V_p (and of V_r)
    every: int = 1                 # R: epochs between selections (update rule "every")
    update_rule: str = "every"
    tau: float = 0.05              # CREST's threshold on rho
    growth: float = 1.0            # CREST's h (T1 growth)
    coresets_per_check: int = 5    # CREST's b: P = b * T1
    posterior_samples: int | None = None  # M; None: 4 for ensemble, 1 otherwise
    posterior_sigma: float = 0.01
    posterior_layers: str = "bn"
    class_balanced: bool = True
    weighted: bool = False         # weight each example's loss by its gamma
    learned_loss: float = 0.0      # CREST's alpha; 0 = never drop
    learned_window: int = 2        # CREST's T2, in selections of the example
    drop_hard: str | float = "auto"  # difficulty stage in each V_p (prune.selection.difficulty); 0 = off
    feature_batch_size: int = 1024

    @property
    def samples(self) -> int:
        if self.posterior_samples is not None:
            return self.posterior_samples
        return 4 if self.kind == "ensemble" else 1

    def __post_init__(self):
        self._check_values()
        self._check_used()

    def _check_values(self) -> None:
        parse_drop_hard(self.drop_hard)
        if self.kind not in DYNAMIC_KINDS:
            raise PruneError(f"unknown --dynamic {self.kind!r}; choose one of: {', '.join(DYNAMIC_KINDS)}",
                             parameters=PARAMETERS)
        if self.update_rule not in UPDATE_RULES:
            raise PruneError(f"unknown --update-rule {self.update_rule!r}; choose one of: {', '.join(UPDATE_RULES)}",
                             parameters=PARAMETERS)
        f = exact_fraction(self.fraction)
        if not 0 < f <= 1:
            raise PruneError(f"--fraction must be in (0, 1] (the fraction of full-data backprops), got {self.fraction}",
                             parameters=PARAMETERS)
        for flag, value, low in (("--epochs", self.epochs, 1), ("--batch-size", self.batch_size, 1),
                                 ("--subset-size", self.subset_size, 1), ("--every", self.every, 1),
                                 ("--learned-window", self.learned_window, 1),
                                 ("coresets per check (b)", self.coresets_per_check, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise PruneError(f"{flag} must be a whole number >= {low}, got {value!r}", parameters=PARAMETERS)
        if self.subset_size < self.batch_size:
            raise PruneError(f"--subset-size ({self.subset_size}) must be at least --batch-size ({self.batch_size}): "
                             "each coreset of one mini-batch is selected from one subset", parameters=PARAMETERS)
        for flag, value in (("--tau", self.tau), ("--lr", self.lr), ("momentum", self.momentum),
                            ("weight decay", self.weight_decay), ("--posterior-sigma", self.posterior_sigma),
                            ("growth (h)", self.growth), ("--learned-loss", self.learned_loss)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise PruneError(f"{flag} must be a finite number >= 0, got {value!r}", parameters=PARAMETERS)
        m = self.samples
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise PruneError(f"--posterior-samples must be a whole number >= 1, got {m!r}", parameters=PARAMETERS)
        if self.kind == "ensemble" and m < 2:
            raise PruneError("--dynamic ensemble needs --posterior-samples >= 2 (the expected distance over M samples)",
                             parameters=PARAMETERS)
        if self.kind != "ensemble" and m != 1:
            raise PruneError(f"--dynamic {self.kind} uses the gradients at the current weights (M = 1); "
                             "drop --posterior-samples or use --dynamic ensemble", parameters=PARAMETERS)
        if self.posterior_layers not in POSTERIOR_LAYERS:
            raise PruneError(f"unknown --posterior-layers {self.posterior_layers!r}; choose bn, fc or all",
                             parameters=PARAMETERS)

    def _check_used(self) -> None:
        """Refuse a knob set away from its default where this run would never read it."""
        unused = []
        if self.update_rule != "crest" and self.tau != DynamicConfig.tau:
            unused.append("--tau is the threshold of --update-rule crest, not of every")
        if self.update_rule == "crest" and self.every != DynamicConfig.every:
            unused.append("--every applies to --update-rule every (the crest rule decides when to re-select)")
        if self.learned_loss == 0 and self.learned_window != DynamicConfig.learned_window:
            unused.append("--learned-window counts selections with a loss below --learned-loss, which is 0 (off)")
        if self.kind == "random" and self.learned_loss:
            unused.append("--dynamic random computes no losses, so --learned-loss would never drop an example")
        if self.kind == "random" and parse_drop_hard(self.drop_hard) not in ("auto", 0):
            unused.append("--dynamic random has no difficulty stage to drop examples (--drop-hard)")
        perturbation = [flag for flag, name in (("--posterior-sigma", "posterior_sigma"),
                                                ("--posterior-layers", "posterior_layers"))
                        if getattr(self, name) != getattr(DynamicConfig, name)]
        if self.kind != "ensemble" and perturbation:
            unused.append(f"{' and '.join(perturbation)} {'sets' if len(perturbation) == 1 else 'set'} the weight "
                          f"perturbations of --dynamic ensemble's posterior samples; --dynamic {self.kind} "
                          + ("selects at the current weights" if self.kind == "crest" else "computes no gradients"))
        if unused:
            named = len(unused) + (len(perturbation) - 1 if self.kind != "ensemble" and perturbation else 0)
            raise PruneError(f"{'; '.join(unused)}: drop {'it' if named == 1 else 'them'}", parameters=PARAMETERS)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["posterior_samples"] = self.samples
        return out
