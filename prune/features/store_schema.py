"""The feature store's attributes (schema ``prune.features/1``): their types and ranges, checked at open.

``validate`` takes the decoded attributes and raises one ``PruneError`` naming the file and the
attribute's path (``dataset.fingerprint``). The dataset record is the one manifests copy
(``prune.manifest_schema.dataset_record``) and must agree with the store's own ``fingerprint``
and ``num_classes``; ``FeatureStore.open`` checks the arrays against the attributes.

The datasets are listed in ``prune.features.store``. Besides the features, every store holds the
warm-up's per-example records, (n, T) with one column per checkpoint pass (``PER_EPOCH``):
``loss_per_epoch`` (float32, the cross-entropy), ``prob_label_per_epoch`` (float32, p_y),
``margin_per_epoch`` (float32, z_y - max_{c != y} z_c) and ``correct_per_epoch`` (uint8, 1 where
argmax_c z_c = y). ``FeatureStore.open`` checks that all four are there with the loss's shape and
reads none of them.
"""

from __future__ import annotations

from prune.errors import PruneError
from prune.manifest_schema import (Invalid, check_depth, dataset_record, integer, noise_settings, obj, show,
                                   string)

REQUIRED = ("fingerprint", "num_classes", "features", "seed", "dataset")


def validate(meta: dict, *, source: str) -> None:
    """Check a store's decoded attributes; raise ``PruneError`` with the first problem found."""
    missing = [key for key in REQUIRED if key not in meta]
    if missing:
        raise PruneError(f"feature store {source} lacks attribute(s) {', '.join(missing)}; it was not written by "
                         "`prune features` or is damaged: re-create it")
    try:
        check_attributes(meta)
    except Invalid as err:
        raise PruneError(f"feature store {source} has a bad attribute: {err}; it was not written by "
                         "`prune features` or is damaged: re-create it") from None


def check_attributes(meta: dict) -> None:
    check_depth(meta)
    fingerprint = string(meta["fingerprint"], "fingerprint")
    classes = integer(meta["num_classes"], "num_classes", low=1)
    integer(meta["seed"], "seed", low=0)  # seeds the feature streams (numpy SeedSequence: non-negative)
    string(obj(meta["features"], "features").get("model"), "features.model")
    record = dataset_record(meta["dataset"], "dataset")
    for key, own in (("num_classes", classes), ("fingerprint", fingerprint)):
        if record[key] != own:
            raise Invalid(f"dataset.{key} is {show(record[key])}, but the store has {key} {show(own)}")
    if meta.get("label_noise") is not None:
        noise_settings(meta["label_noise"], "label_noise")
