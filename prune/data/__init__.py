"""Data: every source loaded into one ``LoadedData`` of normalised float32 tensors.

``sources`` (``load_dataset``: digits, and the dispatch to ``idx``, ``torchvision_sets``,
``npz`` and ``hf``), ``loaded`` (``LoadedData``, ``Split``, normalisation), ``labels`` (label
fingerprint, label noise), ``hf_filter`` (a manifest applied to a Hugging Face dataset),
``torch_subset`` (a manifest applied to a PyTorch dataset).
"""

from prune.data.labels import flip_labels, label_fingerprint
from prune.data.loaded import LoadedData, Split, take
from prune.data.sources import DATASETS, data_root_used, load_dataset, source_paths

__all__ = ["DATASETS", "LoadedData", "Split", "data_root_used", "flip_labels", "label_fingerprint", "load_dataset",
           "source_paths", "take"]
