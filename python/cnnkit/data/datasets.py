"""Datasets: the bundled UCI digits, and readers for the formats users keep on disk.

Every reader takes a local path and never fetches anything. A whole file is read and checked before any
array is returned, so a truncated, corrupt or mislabelled file raises ``DataFormatError`` (a ValueError)
naming the file and what was wrong, and nothing is half-loaded. Images come back NCHW; by default as
float32 scaled to [0, 1] (``dtype=numpy.uint8`` keeps the raw bytes), labels as int64.
Formats: CIFAR-10/100 binary (https://www.cs.toronto.edu/~kriz/cifar.html), CIFAR-10 "python" pickles
(through a restricted unpickler), MNIST / Fashion-MNIST IDX (http://yann.lecun.com/exdb/mnist/), image
folders (Pillow), numpy arrays and ``.npz``.
"""
from .arrays import from_arrays, load_npz
from .cifar import load_cifar10, load_cifar100, read_cifar_binary
from .cifar_pickle import read_cifar_pickle
from .digits import load_digits
from .folder import load_image_folder
from .mnist import load_fashion_mnist, load_mnist, read_idx
# the class names, the bundled file and the image extensions, reachable as ck.data.datasets.NAME
from .cifar import CIFAR10_CLASSES  # noqa: F401
from .digits import DIGITS_FILE  # noqa: F401
from .folder import IMAGE_EXTENSIONS  # noqa: F401
from .mnist import FASHION_MNIST_CLASSES  # noqa: F401

__all__ = ["load_digits", "load_cifar10", "load_cifar100", "read_cifar_binary", "read_cifar_pickle",
           "load_mnist", "load_fashion_mnist", "read_idx", "load_image_folder", "load_npz", "from_arrays"]
