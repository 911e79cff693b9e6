"""Data: every source (digits, IDX, torchvision sets, npz, Hugging Face) loaded into one ``LoadedData``."""

from prune.data.sources import DATASETS, LoadedData, Split, flip_labels, label_fingerprint, load_dataset, take

__all__ = ["DATASETS", "LoadedData", "Split", "flip_labels", "label_fingerprint", "load_dataset", "take"]
