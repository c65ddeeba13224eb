"""Datasets: builder functions that return a `DataSplits` of train / val / test batches."""

from dlcourse.data.batches import DataSplits, LoaderBatches, TensorBatches

__all__ = ["DataSplits", "LoaderBatches", "TensorBatches"]
