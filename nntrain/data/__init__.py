"""Data sets, normalisation, the batch loader and augmentation."""
