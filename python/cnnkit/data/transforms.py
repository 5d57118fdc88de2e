"""Live augmentation on NCHW batches, run in C++ (``cnnkit._C``, OpenMP over the batch, GIL released).

Every random choice for a sample comes from Philox-4x32-10 keyed by (seed, epoch, the sample's index in the
dataset, the transform's stream), so a batch is a pure function of those numbers: the same at any thread
count, whatever else is in the batch, and after a resume. ``DataLoader`` passes (ids, epoch, seed);
``Compose`` gives each member its own stream. Semantics follow torchvision where it has the transform
(RandomResizedCrop's sampling, ColorJitter's random order and ITU-R 601 grey, positive angle =
counter-clockwise); the draws themselves differ (our generator, not torch's). Nothing is clamped: the data
may already be mean-subtracted. Also here: ``Normalize`` (deterministic, torchvision's semantics), and
``ten_crop`` and ``tta_predict`` for test-time augmentation.

On the GPU: a CuPy batch runs the CUDA twin of the same pipeline on its device, on CuPy's current
stream, and stays there (nothing is synchronised or copied back). ids may be numpy (moved with one small
host-to-device copy) or int64 CuPy on x's device (then not checked for negatives, which would need a sync);
``return_params=True`` gives CuPy params. The result equals the CPU's bit for bit for flips, crops, resized
crops and colour jitter; PCALighting and RandomAffine are within the tolerance given in docs/kernels.md
(CUDA's log/cos/sin against glibc's). Plain callables in a Compose receive the CuPy array as it is: cnnkit's
preprocessors are numpy-only, so standardise the data set once beforehand when batches live on the GPU.
"""

import numpy as np

from .. import _C
from .._xp import is_device_array as _is_device, require_cupy as _cupy
from ..ops.augment import aug_pipeline as _aug_pipeline
from ._common import check_float, check_images, check_int, check_range

__all__ = ["Transform", "Compose", "RandomHorizontalFlip", "RandomCrop", "RandomResizedCrop", "ColorJitter",
           "PCALighting", "RandomAffine", "CenterCrop", "Normalize", "ten_crop", "tta_predict"]

_U32 = 2**32
_MAX_STREAM = 2**20  # the kernel's stream word is (stream << 4 | kind) << 8 | block, in 32 bits


def _device_ids(op, x, ids):
    """ids for a CuPy batch x: default 0..N-1 made on the device, numpy ids checked then copied over (one small
    host-to-device copy), CuPy ids checked for dtype, shape and device (not for negatives: that needs a sync)."""
    cp, n, dev = _cupy(), x.shape[0], x.device.id
    with cp.cuda.Device(dev):
        if ids is None:
            return cp.arange(n, dtype=cp.int64)
        if not _is_device(ids):
            return cp.asarray(_host_ids(op, n, ids))
        if ids.dtype.kind not in "iu":
            raise TypeError(f"{op}: ids must hold integers, got dtype {ids.dtype}")
        if tuple(ids.shape) != (n,):
            raise ValueError(f"{op}: ids must have shape ({n},) (one index per sample), got {tuple(ids.shape)}")
        if ids.device.id != dev:
            raise ValueError(f"{op}: ids is on GPU {ids.device.id} but x is on GPU {dev}")
        return cp.ascontiguousarray(ids, dtype=cp.int64)


def _host_ids(op, n, ids):
    """ids for a numpy batch of n samples: default 0..N-1, else checked and made contiguous int64."""
    if ids is None:
        return np.arange(n, dtype=np.int64)
    if _is_device(ids):
        raise TypeError(f"{op}: mixed devices: ids is a cupy.ndarray (GPU) but x is a numpy.ndarray (CPU); "
                        f"put both on one device")
    if not isinstance(ids, np.ndarray):
        raise TypeError(f"{op}: ids must be a numpy.ndarray of int64, got {type(ids).__name__}")
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{op}: ids must hold integers, got dtype {ids.dtype}")
    if ids.shape != (n,):
        raise ValueError(f"{op}: ids must have shape ({n},) (one index per sample), got {tuple(ids.shape)}")
    if n and ids.min() < 0:
        raise ValueError(f"{op}: ids must be >= 0, got {ids.min()}")
    return np.ascontiguousarray(ids, dtype=np.int64)


def _key_args(op, x, ids, epoch, seed, stream, num_threads):
    n = x.shape[0]
    ids = _device_ids(op, x, ids) if _is_device(x) else _host_ids(op, n, ids)
    epoch = check_int(op, "epoch", epoch, minimum=0)
    if epoch >= _U32:
        raise ValueError(f"{op}: epoch must be < 2**32, got {epoch}")
    seed = check_int(op, "seed", seed, minimum=0)
    if seed >= 2**64:
        raise ValueError(f"{op}: seed must be < 2**64, got {seed}")
    stream = check_int(op, "stream", stream, minimum=0)
    if stream >= _MAX_STREAM:
        raise ValueError(f"{op}: stream must be < 2**20, got {stream}")
    nt = 0 if num_threads is None else check_int(op, "num_threads", num_threads, minimum=1)
    return ids, epoch, seed, stream, nt


def _size(op, name, v):
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{op}: {name} must be an int or a pair (h, w), got {tuple(v)}")
        out = tuple(check_int(op, name, e, minimum=1) for e in v)
    else:
        out = (check_int(op, name, v, minimum=1),) * 2
    return out


_RECORD = 16  # values recorded per sample by the kernel (augment.h kAugRecord)


def _records(x):
    """The (N, 16) float64 array the kernels write each sample's draws into, on x's device."""
    if not _is_device(x):
        return np.zeros((x.shape[0], _RECORD), np.float64)
    cp = _cupy()
    with cp.cuda.Device(x.device.id):
        return cp.zeros((x.shape[0], _RECORD), cp.float64)


def _run(x, ids, epoch, seed, nt, stages, records=None):
    """One kernel call for a run of stages: [(transform, philox stream word, stage tuple)]. On a GPU a lighting
    stage takes its transform's eigval/eigvec copies on x's device."""
    if _is_device(x):
        dev = x.device.id
        kstages = [st if st[5] is None else st[:5] + t._device_eig(dev) for t, _, st in stages]
    else:
        kstages = [st for _, _, st in stages]
    return _aug_pipeline(x, ids, kstages, seed, epoch, nt, records)


def _stage_list(transforms, streams, shape):
    """Validate each transform against the running (C, H, W) and build its kernel stage."""
    out = []
    C, H, W = shape
    for t, stream in zip(transforms, streams):
        kind, a, P, Q, ev, vec = t._stage(C, H, W)
        a = [float(v) for v in a] + [0.0] * (6 - len(a))
        out.append((t, stream, (kind, stream, a, P, Q, ev, vec)))
        H, W = P, Q
    return out


class Transform:
    """A random transform of a batch. Call as ``t(x, ids=None, epoch=0, seed=0, stream=0, num_threads=None)``.

    x: (N, C, H, W) float32/float64, C-contiguous. ids: the samples' dataset indices, int64 (N,) (default
    0..N-1). With ``return_params=True`` the call returns (y, params): the values drawn for each sample.
    A CuPy x runs on its GPU (module docstring); y and params are then CuPy arrays on that device.
    """

    kind = 0  # 1..15, distinct per class, mixed into the Philox stream: (stream << 4) | kind

    def __call__(self, x, ids=None, epoch=0, seed=0, stream=0, num_threads=None, return_params=False):
        op = type(self).__name__
        check_images(op, "x", x, device=True)
        ids, epoch, seed, stream, nt = _key_args(op, x, ids, epoch, seed, stream, num_threads)
        stages = _stage_list([self], [(stream << 4) | self.kind], x.shape[1:])
        records = _records(x) if return_params else None
        y = _run(x, ids, epoch, seed, nt, stages, records)
        return (y, self._params(records, x.shape[1])) if return_params else y

    def _stage(self, C, H, W):  # pragma: no cover - abstract
        """-> (kind, parameters (<= 6 floats), P, Q, eigval or None, eigvec or None), after checking x."""
        raise NotImplementedError

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class Compose:
    """Apply transforms in order. Member k of a Compose called with stream s draws from stream 64 s + k + 1,
    so two copies of one transform never share random numbers. Consecutive built-in transforms run fused, in one
    kernel call (one pass over the batch, bit-identical to calling them one by one). Plain callables f(x)
    (preprocessors, CenterCrop) may be mixed in."""

    def __init__(self, transforms):
        transforms = list(transforms)
        for t in transforms:
            if not callable(t):
                raise TypeError(f"Compose: every member must be callable, got {type(t).__name__}")
        if len(transforms) >= 64:
            raise ValueError(f"Compose: at most 63 members, got {len(transforms)}")
        self.transforms = transforms

    def __call__(self, x, ids=None, epoch=0, seed=0, stream=0, num_threads=None):
        run, k = [], 0
        while k < len(self.transforms):
            t = self.transforms[k]
            if isinstance(t, Transform):
                run.append((t, ((stream * 64 + k + 1) << 4) | t.kind))
                k += 1
                if k < len(self.transforms) and isinstance(self.transforms[k], Transform):
                    continue
                check_images("Compose", "x", x, device=True)
                ids_, epoch_, seed_, _, nt = _key_args("Compose", x, ids, epoch, seed, stream, num_threads)
                if _is_device(ids_):
                    ids = ids_  # host ids cross to the device once per call, however many fused runs follow
                stages = _stage_list([r[0] for r in run], [r[1] for r in run], x.shape[1:])
                x = _run(x, ids_, epoch_, seed_, nt, stages)
                run = []
                continue
            if isinstance(t, Compose):
                x = t(x, ids=ids, epoch=epoch, seed=seed, stream=stream * 64 + k + 1, num_threads=num_threads)
            else:
                x = t(x)
            k += 1
        return x

    def __repr__(self):
        return "Compose([" + ", ".join(repr(t) for t in self.transforms) + "])"


class RandomHorizontalFlip(Transform):
    """Mirror each image left-right with probability p (one Philox word: flip iff u < p). params: uint8 (N,)."""

    kind = _C.aug_kinds["hflip"]

    def __init__(self, p=0.5):
        self.p = check_float("RandomHorizontalFlip", "p", p, 0.0, 1.0)

    def _stage(self, C, H, W):
        return self.kind, [self.p], H, W, None, None

    def _params(self, rec, C):
        return rec[:, 0].astype(np.uint8)


class RandomCrop(Transform):
    """A random size (h, w) window of the image padded with `padding` zeros on every side (CIFAR: 32, 4).
    Offsets (oy, ox) into the padded image, uniform, oy drawn first. params: int64 (N, 2)."""

    kind = _C.aug_kinds["crop"]

    def __init__(self, size, padding=0):
        op = "RandomCrop"
        self.size = _size(op, "size", size)
        self.padding = check_int(op, "padding", padding, minimum=0)

    def _stage(self, C, H, W):
        Hp, Wp = H + 2 * self.padding, W + 2 * self.padding
        if self.size[0] > Hp or self.size[1] > Wp:
            raise ValueError(f"RandomCrop: size {self.size} must fit in the padded image ({Hp}, {Wp}) of images "
                             f"({H}, {W}) with padding {self.padding}")
        return self.kind, [self.padding], self.size[0], self.size[1], None, None

    def _params(self, rec, C):
        return rec[:, :2].astype(np.int64)


class RandomResizedCrop(Transform):
    """torchvision's RandomResizedCrop: a box of area fraction ~ U(scale) and aspect ratio log-uniform in
    `ratio` (10 tries, then a central crop), resized to `size` bilinearly (align_corners=False, no antialias).
    params: int64 (N, 4) = top, left, h, w."""

    kind = _C.aug_kinds["resized_crop"]

    def __init__(self, size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
        op = "RandomResizedCrop"
        self.size = _size(op, "size", size)
        self.scale = check_range(op, "scale", scale, positive=True)
        self.ratio = check_range(op, "ratio", ratio, positive=True)

    def _stage(self, C, H, W):
        return self.kind, [*self.scale, *self.ratio], self.size[0], self.size[1], None, None

    def _params(self, rec, C):
        return rec[:, :4].astype(np.int64)


class ColorJitter(Transform):
    """Brightness, contrast and saturation jitter in a random order (torchvision's float semantics, no clamp).

    Each factor ~ U(max(0, 1 - s), 1 + s). brightness: x * b. contrast: c x + (1 - c) mean(grey(x)).
    saturation (C = 3): s x + (1 - s) grey(x), grey = 0.299 R + 0.587 G + 0.114 B. params: float64 (N, 4) =
    order (index into itertools.permutations of (brightness, contrast, saturation)), b, c, s."""

    kind = _C.aug_kinds["jitter"]

    def __init__(self, brightness=0.0, contrast=0.0, saturation=0.0):
        op = "ColorJitter"
        self.brightness = check_float(op, "brightness", brightness, 0.0)
        self.contrast = check_float(op, "contrast", contrast, 0.0)
        self.saturation = check_float(op, "saturation", saturation, 0.0)

    def _stage(self, C, H, W):
        if self.saturation > 0 and C != 3:
            raise ValueError(f"ColorJitter: saturation needs 3 channels (RGB), got x with C = {C}")
        if self.contrast > 0 and C not in (1, 3):
            raise ValueError(f"ColorJitter: contrast needs 1 or 3 channels, got x with C = {C}")
        return self.kind, [self.brightness, self.contrast, self.saturation], H, W, None, None

    def _params(self, rec, C):
        return rec[:, :4].copy()


# ImageNet RGB eigenvalues/eigenvectors (columns) used by AlexNet-style lighting in fb.resnet.torch.
IMAGENET_EIGVAL = np.array([0.2175, 0.0188, 0.0045])
IMAGENET_EIGVEC = np.array([[-0.5675, 0.7192, 0.4009],
                            [-0.5808, -0.0045, -0.8140],
                            [-0.5836, -0.6948, 0.4203]])


class PCALighting(Transform):
    """AlexNet's PCA lighting noise (Krizhevsky et al. 2012, sec. 4.1): add eigvec @ (alpha * eigval) to every
    pixel, alpha ~ N(0, alphastd^2) per sample and component. eigvec holds eigenvectors as columns.
    Defaults: the ImageNet RGB statistics; ``PCALighting.fit(x_train)`` computes them from data. params:
    float64 (N, C) = alpha."""

    kind = _C.aug_kinds["lighting"]

    def __init__(self, alphastd=0.1, eigval=None, eigvec=None):
        op = "PCALighting"
        self.alphastd = check_float(op, "alphastd", alphastd, 0.0)
        eigval = IMAGENET_EIGVAL if eigval is None else eigval
        eigvec = IMAGENET_EIGVEC if eigvec is None else eigvec
        self.eigval = np.ascontiguousarray(np.asarray(eigval, dtype=np.float64))
        self.eigvec = np.ascontiguousarray(np.asarray(eigvec, dtype=np.float64))
        C = self.eigval.shape[0] if self.eigval.ndim == 1 else -1
        if self.eigval.ndim != 1 or self.eigvec.shape != (C, C):
            raise ValueError(f"{op}: eigval must be (C,) and eigvec (C, C), got {self.eigval.shape} and "
                             f"{self.eigvec.shape}")
        if C > _RECORD:
            raise ValueError(f"{op}: at most {_RECORD} channels, got {C}")

    @classmethod
    def fit(cls, x, alphastd=0.1):
        """Eigen-decompose the C x C covariance of the pixels of x (N, C, H, W) across the data set."""
        check_images("PCALighting.fit", "x", x)
        pix = x.transpose(1, 0, 2, 3).reshape(x.shape[1], -1).astype(np.float64)
        cov = np.cov(pix, bias=True).reshape(x.shape[1], x.shape[1])
        val, vec = np.linalg.eigh(cov)
        order = np.argsort(val)[::-1]
        return cls(alphastd, np.clip(val[order], 0, None), vec[:, order])

    def _stage(self, C, H, W):
        if C != self.eigval.shape[0]:
            raise ValueError(f"PCALighting: x has C = {C} channels but eigval has {self.eigval.shape[0]}")
        return self.kind, [self.alphastd], H, W, self.eigval, self.eigvec

    def _device_eig(self, dev):
        """(eigval, eigvec) as CuPy arrays on GPU `dev`, copied once per device (again if either is replaced)."""
        cache = self.__dict__.setdefault("_eig_on_device", {})
        hit = cache.get(dev)
        if hit is None or hit[0] is not self.eigval or hit[1] is not self.eigvec:
            cp = _cupy()
            with cp.cuda.Device(dev):
                hit = cache[dev] = (self.eigval, self.eigvec, cp.asarray(self.eigval), cp.asarray(self.eigvec))
        return hit[2], hit[3]

    def _params(self, rec, C):
        return rec[:, :C].copy()


class RandomAffine(Transform):
    """Small random rotation, translation and scale about the image centre, bilinear, `fill` outside.

    As torchvision's RandomAffine: translate = (a, b) are fractions of the width and the height, so
    tx ~ U(-a W, a W) and ty ~ U(-b H, b H); angle ~ U(-degrees, degrees), positive = counter-clockwise on
    screen; scale ~ U(scale). Unlike torchvision the shifts are not rounded to whole pixels. Output pixel p reads
    the input at c + R(-angle) (p - c - t) / scale with c = ((H-1)/2, (W-1)/2), t = (ty, tx).
    params: float64 (N, 4) = angle, ty, tx, scale (drawn in that order).
    """

    kind = _C.aug_kinds["affine"]

    def __init__(self, degrees=0.0, translate=(0.0, 0.0), scale=(1.0, 1.0), fill=0.0):
        op = "RandomAffine"
        self.degrees = check_float(op, "degrees", degrees, 0.0, 180.0)
        if not isinstance(translate, (tuple, list)) or len(translate) != 2:
            raise TypeError(f"{op}: translate must be a pair (a, b) of fractions (width, height), got {translate!r}")
        self.translate = tuple(check_float(op, "translate", t, 0.0, 1.0) for t in translate)
        self.scale = check_range(op, "scale", scale, positive=True)
        self.fill = check_float(op, "fill", fill)

    def _stage(self, C, H, W):
        a, b = self.translate  # (width, height) fractions; the kernel takes (t_h, t_w)
        return self.kind, [self.degrees, b, a, *self.scale, self.fill], H, W, None, None

    def _params(self, rec, C):
        return rec[:, :4].copy()


class CenterCrop:
    """The central (h, w) window (deterministic; for evaluation). Offsets round down, as torchvision. A CuPy x
    gives a CuPy result on its device."""

    def __init__(self, size):
        self.size = _size("CenterCrop", "size", size)

    def __call__(self, x):
        check_images("CenterCrop", "x", x, device=True)
        h, w = self.size
        H, W = x.shape[2:]
        if h > H or w > W:
            raise ValueError(f"CenterCrop: size {self.size} is larger than the images ({H}, {W})")
        top, left = (H - h) // 2, (W - w) // 2
        xp = _cupy() if _is_device(x) else np
        return xp.ascontiguousarray(x[:, :, top:top + h, left:left + w])


class Normalize:
    """Per-channel ``(x - mean[c]) / std[c]``, as torchvision's transforms.Normalize: mean and std are cast to
    x's dtype first, then subtracted and divided (so float32 results equal torch's bit for bit). mean, std:
    one number per channel, or one for all. Deterministic, so it composes in a Compose anywhere (usually
    last, after the random crops and flips). x: (N, C, H, W) float32/float64; the result is a new array; a
    CuPy x gives a CuPy result on its device."""

    def __init__(self, mean, std):
        op = "Normalize"
        self.mean, self.std = _per_channel(op, "mean", mean), _per_channel(op, "std", std)
        if len(self.mean) != len(self.std) and 1 not in (len(self.mean), len(self.std)):
            raise ValueError(f"{op}: mean and std must have one value per channel each, got {len(self.mean)} "
                             f"and {len(self.std)}")
        if 0.0 in self.std:
            raise ValueError(f"{op}: std must be nonzero (it divides), got {list(self.std)}")
        self._cast = {}   # (array module, dtype) -> (mean, std) as (1, C, 1, 1) arrays of that dtype

    def __call__(self, x):
        op = "Normalize"
        check_images(op, "x", x, device=True)
        C = x.shape[1]
        for name, v in (("mean", self.mean), ("std", self.std)):
            if len(v) not in (1, C):
                raise ValueError(f"{op}: {name} has {len(v)} values but x has C = {C} channels")
        xp = _cupy() if _is_device(x) else np
        key = (xp.__name__, x.dtype.str, x.device.id if _is_device(x) else None)
        if key not in self._cast:
            m, s = (xp.asarray(v, dtype=x.dtype).reshape(1, -1, 1, 1) for v in (self.mean, self.std))
            if bool((s == 0).any()):
                raise ValueError(f"{op}: std {list(self.std)} has a value that is zero in {x.dtype}")
            self._cast[key] = (m, s)
        m, s = self._cast[key]
        out = xp.subtract(x, m)
        return xp.divide(out, s, out=out)

    def __repr__(self):
        return f"Normalize(mean={list(self.mean)}, std={list(self.std)})"


def _per_channel(op, name, v):
    """A number or a non-empty sequence of numbers -> tuple of floats."""
    vals = list(v) if isinstance(v, (tuple, list, np.ndarray)) else [v]
    if not vals:
        raise ValueError(f"{op}: {name} must hold one value per channel, got an empty sequence")
    return tuple(check_float(op, name, e) for e in vals)


# ---------------------------------------------------------------- test-time augmentation

def ten_crop(x, size):
    """The 10 views of the 10-crop evaluation (Krizhevsky et al. 2012): the 4 corner (h, w) crops and the centre
    crop, then the same 5 mirrored. Returns a list of 10 arrays (N, C, h, w)."""
    check_images("ten_crop", "x", x)
    h, w = _size("ten_crop", "size", size)
    H, W = x.shape[2:]
    if h > H or w > W:
        raise ValueError(f"ten_crop: size {(h, w)} is larger than the images ({H}, {W})")
    tops_lefts = [(0, 0), (0, W - w), (H - h, 0), (H - h, W - w), ((H - h) // 2, (W - w) // 2)]
    crops = [np.ascontiguousarray(x[:, :, t:t + h, lf:lf + w]) for t, lf in tops_lefts]
    return crops + [np.ascontiguousarray(c[:, :, :, ::-1]) for c in crops]


def tta_predict(predict, x, size=None, flip=True, average="scores"):
    """Average ``predict(view) -> scores (N, K)`` over test-time views of x (N, C, H, W).

    size=None: the image itself (and its mirror when flip). size=(h, w) or int: the 5 crops of the 10-crop
    evaluation (with flip, all 10). average: "scores" averages what predict returns; "softmax" averages the
    softmax probabilities of the scores. Returns float64 (N, K).
    """
    op = "tta_predict"
    if not callable(predict):
        raise TypeError(f"{op}: predict must be callable, got {type(predict).__name__}")
    if average not in ("scores", "softmax"):
        raise ValueError(f"{op}: average must be 'scores' or 'softmax', got {average!r}")
    if not isinstance(flip, (bool, np.bool_)):
        raise TypeError(f"{op}: flip must be a bool, got {type(flip).__name__}")
    check_images(op, "x", x)
    if size is None:
        views = [x] + ([np.ascontiguousarray(x[:, :, :, ::-1])] if flip else [])
    else:
        views = ten_crop(x, size)
        if not flip:
            views = views[:5]
    total = None
    for v in views:
        s = np.asarray(predict(v), dtype=np.float64)
        if s.ndim != 2 or s.shape[0] != x.shape[0]:
            raise ValueError(f"{op}: predict must return scores (N, K) with N = {x.shape[0]}, got {s.shape}")
        if average == "softmax":
            e = np.exp(s - s.max(axis=1, keepdims=True))
            s = e / e.sum(axis=1, keepdims=True)
        total = s if total is None else total + s
    return total / len(views)



