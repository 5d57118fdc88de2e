"""Image folders (one sub-folder per class), decoded with Pillow."""
import os
import pathlib

import numpy as np

from ._common import ArrayDataset, DataFormatError
from ._files import _scale


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


def load_image_folder(root, size=None, mode="RGB", dtype=np.float32, extensions=IMAGE_EXTENSIONS):
    """Images under ``root/<class>/*`` (one sub-folder per class, sorted by name) -> ArrayDataset.

    Needs Pillow, an optional dependency (``pip install cnnkit[images]``). ``mode`` is a Pillow mode ("RGB"
    or "L"); ``size`` (h, w) resizes every image bilinearly; without it all images must share one size.
    """
    op = "load_image_folder"
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise ImportError(f"{op} needs Pillow, an optional dependency: pip install 'cnnkit[images]' "
                          f"(or pip install pillow)") from None
    if mode not in ("RGB", "L"):
        raise ValueError(f"{op}: mode must be 'RGB' or 'L', got {mode!r}")
    if size is not None:
        if (not isinstance(size, (tuple, list)) or len(size) != 2
                or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in size)):
            raise ValueError(f"{op}: size must be a pair (h, w) of positive ints, got {size!r}")
    root = pathlib.Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{os.fspath(root)}: not a folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataFormatError(root, "no class sub-folders")
    images, labels, shape0, first = [], [], None, None
    for label, cls in enumerate(classes):
        files = sorted(p for p in (root / cls).iterdir() if p.is_file() and p.suffix.lower() in extensions)
        for p in files:
            try:
                with Image.open(p) as im:
                    im.load()
                    im = im.convert(mode)
                    if size is not None:
                        im = im.resize((size[1], size[0]), Image.BILINEAR)
                    a = np.asarray(im, dtype=np.uint8)
            except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
                raise DataFormatError(p, f"unreadable or corrupt image ({type(e).__name__}: {e})") from None
            a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
            if shape0 is None:
                shape0, first = a.shape, p
            elif a.shape != shape0:
                raise DataFormatError(p, f"image is {a.shape[1]}x{a.shape[2]} but {first} is "
                                         f"{shape0[1]}x{shape0[2]}; pass size=(h, w) to resize")
            images.append(a)
            labels.append(label)
    if not images:
        raise DataFormatError(root, f"no images with extensions {', '.join(extensions)}")
    return ArrayDataset(_scale(op, np.stack(images), dtype), np.asarray(labels, np.int64), classes)
