"""Datasets: resolve a name or path, decode once into uint8 arrays, cache by content digest.

>>> from selfsup.data import load_dataset
>>> splits = load_dataset("cifar10")          # the bundled JPEG tarballs
>>> splits.train.images.shape, splits.test.classes[:2]
((50000, 32, 32, 3), ['airplane', 'automobile'])

Sources (``name``):

* ``cifar10``: ``<data root>/cifar10-jpeg/{train,test}.tar.gz``, SHA256-verified against
  ``SHA256SUMS`` on every load.
* ``cifar10-pickle``: the official python release in ``<data root>/cifar-10-batches-py``
  (downloaded when ``download=True``).
* a path: an ImageFolder directory, a tar of one, a folder of ``train``/``test`` tars,
  or a ``cifar-10-batches-py`` folder.

Decoded arrays are cached in ``$SELFSUP_CACHE_DIR`` (default ``~/.cache/selfsup``) under
a key made from the source's digest and the decoding settings.
"""

from . import cifar_pickle
from .cache import cache_dir
from .dataset import DataSplits, ImageDataset, channel_stats, class_balanced_indices
from .loading import load_data, load_dataset, with_subset
from .sources import data_root

__all__ = [
    "DataSplits",
    "ImageDataset",
    "cache_dir",
    "channel_stats",
    "cifar_pickle",
    "class_balanced_indices",
    "data_root",
    "load_data",
    "load_dataset",
    "with_subset",
]
