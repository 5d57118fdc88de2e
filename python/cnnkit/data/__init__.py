"""cnnkit.data: datasets, loaders for on-disk formats, preprocessing, live augmentation (C++), batching.

    import cnnkit as ck
    splits = ck.data.load_digits()                       # bundled UCI digits, fixed train/val/test split
    pre = ck.data.ChannelStandardize().fit(splits["train"].x)
    aug = ck.data.Compose([ck.data.RandomCrop(8, padding=1), ck.data.RandomHorizontalFlip()])
    loader = ck.data.DataLoader(splits["train"], 64, shuffle=True, seed=0, transform=ck.data.Compose([pre, aug]))
"""
from ._common import ArrayDataset, DataFormatError
from .datasets import (from_arrays, load_cifar10, load_cifar100, load_digits, load_fashion_mnist,
                       load_image_folder, load_mnist, load_npz, read_cifar_binary, read_cifar_pickle, read_idx)
from .loader import DataLoader, as_loader, epoch_permutation
from .torch_loader import TorchLoader
from .subsets import Subset, TensorDataset, random_split
from .preprocessing import (ChannelMean, ChannelStandardize, MeanImage, PCAWhiten, Preprocessor, ZCAWhiten,
                            load_preprocessor)
from .transforms import (CenterCrop, ColorJitter, Compose, Normalize, PCALighting, RandomAffine, RandomCrop,
                         RandomHorizontalFlip, RandomResizedCrop, Transform, ten_crop, tta_predict)

__all__ = ["ArrayDataset", "DataFormatError", "load_digits", "load_cifar10", "load_cifar100", "read_cifar_binary",
           "read_cifar_pickle", "load_mnist", "load_fashion_mnist", "read_idx", "load_image_folder", "load_npz",
           "from_arrays", "DataLoader", "TorchLoader", "as_loader", "epoch_permutation", "Preprocessor", "MeanImage",
           "ChannelMean", "ChannelStandardize", "PCAWhiten", "ZCAWhiten", "load_preprocessor", "Transform", "Compose",
           "RandomHorizontalFlip", "RandomCrop", "RandomResizedCrop", "ColorJitter", "PCALighting",
           "RandomAffine", "CenterCrop", "Normalize", "ten_crop", "tta_predict", "TensorDataset", "Subset",
           "random_split"]
