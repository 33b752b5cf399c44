"""Data sets, normalisation, augmentation, the batch loader and test-time augmentation.

Typical use (what the trainer does)::

    from nntrain.data import load_data, Normalizer, make_augmentation, BatchLoader

    data = load_data(cfg["data"], seed)                 # Data: train / val / test splits
    norm = Normalizer.fit(data.config["normalize"], data.train.x, seed)
    aug = make_augmentation(data.config["augment"])
    net_input = aug.output_shape(data.input_shape)      # random_crop may shrink it
    train = BatchLoader(data.train, 128, normalizer=norm, augment=aug, seed=seed)
    val = BatchLoader(data.val, 500, normalizer=norm, augment=aug.for_eval(), shuffle=False)
"""

from .augment import Pipeline, center_crop, make_augmentation
from .datasets import Data, default_fetch_root, known_input_shape, load_data, validate_data_config
from .fetch import fetch_dataset
from .loader import BatchLoader
from .normalize import Normalizer, normalize_spec
from .splits import Split
from .tta import predict_proba

__all__ = [
    "BatchLoader", "Data", "Normalizer", "Pipeline", "Split", "center_crop", "default_fetch_root", "fetch_dataset",
    "known_input_shape", "load_data",
    "make_augmentation", "normalize_spec", "predict_proba", "validate_data_config",
]
