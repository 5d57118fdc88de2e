"""The classic architectures, laid out as torchvision lays them out so that parameter and buffer names map
one to one onto torchvision's state-dict keys (``features.0.weight``, ``layer1.0.downsample.0.weight``,
``fc.weight``, ``bn1.running_mean``, ``bn1.num_batches_tracked``, ...).

Every builder takes ``num_classes``, ``in_channels`` (3; LeNet 1), ``seed`` (None: layers draw from the
global generator, ``ck.manual_seed``) and ``dtype``, and returns a ``ck.Graph`` whose input size is free:
convolutions and pooling take any size large enough, and the classifier sees a fixed size thanks to
torchvision's adaptive average pooling (AdaptiveAvgPool2d, exact torch bins, see zoo.layers), or to global
average pooling in the ResNets. Top-level stages (``features``, ``avgpool``, ``classifier``;
``conv1`` .. ``layer4``, ``fc``) are the names ``freeze(up_to=...)``, ``zoo.features`` and
``replace_head`` work with.

Initialisation follows the papers' He init (fan_in) for convolutions, BN scale 1 / shift 0, N(0, 0.01)
for the fully connected layers; torchvision's own init differs in detail (fan_out, and uniform for the
ResNet fc), which only matters before loading weights.
"""
import numpy as np

from ..graph import Graph, Input, Sequential
from ..layers import (Add, BatchNorm2d, Conv2d, Dropout, Flatten, GlobalAvgPool2d, Linear, LocalResponseNorm,
                      MaxPool2d, ReLU)
from .layers import AdaptiveAvgPool2d, ShortcutA


class _Builder:
    """Hands every layer its own seed (drawn from `seed`), so one builder seed fixes all initial weights."""

    def __init__(self, seed, dtype):
        self.rng = None if seed is None else np.random.default_rng(seed)
        self.dtype = np.dtype(dtype)

    def seed(self):
        return None if self.rng is None else int(self.rng.integers(2**62))

    def conv(self, cin, cout, k, stride=1, padding=0, bias=True, name=None):
        return Conv2d(cin, cout, k, stride, padding, bias=bias, weight_init="he", seed=self.seed(),
                      dtype=self.dtype, name=name)

    def linear(self, fin, fout, name=None, init="gaussian(0.01)"):
        return Linear(fin, fout, weight_init=init, seed=self.seed(), dtype=self.dtype, name=name)

    def bn(self, c, name=None):
        return BatchNorm2d(c, dtype=self.dtype, name=name)


def _check(op, num_classes, in_channels):
    for n, v in (("num_classes", num_classes), ("in_channels", in_channels)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"zoo.{op}: {n} must be a positive int, got {v!r}")


def _chain(x, layers):
    for layer in layers:
        x = layer(x)
    return x


# ================================================================ LeNet-5

def lenet5(num_classes=10, in_channels=1, seed=None, dtype=np.float32):
    """LeNet-5 (LeCun et al. 1998) in its modern form, torchvision-style names:

    features: 0 Conv2d(in, 6, 5), 1 ReLU, 2 MaxPool2d(2), 3 Conv2d(6, 16, 5), 4 ReLU, 5 MaxPool2d(2);
    avgpool: AdaptiveAvgPool2d(5) (the identity for the paper's 32x32 input); flatten;
    classifier: 0 Linear(400, 120), 1 ReLU, 2 Linear(120, 84), 3 ReLU, 4 Linear(84, num_classes).

    The 1998 network used scaled tanh units and trainable subsampling; ReLU and max pooling are what
    everyone trains today. Inputs need at least 14x14 pixels (MNIST's 28x28 works; upsample 8x8 digits)."""
    _check("lenet5", num_classes, in_channels)
    b = _Builder(seed, dtype)
    x = Input(name="input")
    features = Sequential(b.conv(in_channels, 6, 5), ReLU(), MaxPool2d(2), b.conv(6, 16, 5), ReLU(), MaxPool2d(2),
                          name="features")
    classifier = Sequential(b.linear(400, 120, init="he"), ReLU(), b.linear(120, 84, init="he"), ReLU(),
                            b.linear(84, num_classes), name="classifier")
    y = _chain(x, [features, AdaptiveAvgPool2d(5, name="avgpool"), Flatten(name="flatten"), classifier])
    return Graph(x, y, name="lenet5")


# ================================================================ AlexNet

def alexnet(num_classes=1000, in_channels=3, lrn=True, dropout=0.5, hidden=4096, seed=None, dtype=np.float32):
    """AlexNet (Krizhevsky et al. 2012) as torchvision builds it (the single-GPU "one weird trick" widths
    64-192-384-256-256), with the original's local response normalisation after the ReLUs of the first
    two convolutions (before their pooling) when ``lrn`` is true:

    features: 0 Conv2d(in, 64, 11, 4, 2), 1 ReLU, norm1, 2 MaxPool2d(3, 2), 3 Conv2d(64, 192, 5, p=2), 4 ReLU,
    norm2, 5 MaxPool2d(3, 2), 6 Conv2d(192, 384, 3, p=1), 7 ReLU, 8 Conv2d(384, 256, 3, p=1), 9 ReLU,
    10 Conv2d(256, 256, 3, p=1), 11 ReLU, 12 MaxPool2d(3, 2);
    avgpool: AdaptiveAvgPool2d(6); flatten;
    classifier: 0 Dropout, 1 Linear(9216, hidden), 2 ReLU, 3 Dropout, 4 Linear(hidden, hidden), 5 ReLU,
    6 Linear(hidden, num_classes).

    The normalisation layers are named ``norm1`` and ``norm2`` (Caffe's names), so the numbered layers keep
    torchvision's indices and a torchvision state dict loads as is (LRN has no parameters). They use the
    paper's constants k=2, n=5, alpha=1e-4, beta=0.75; since LocalResponseNorm divides alpha by n (as
    PyTorch and Caffe do) and the paper does not, the layer gets alpha = 5 * 1e-4. ``lrn=False`` gives
    torchvision's network exactly. ``hidden`` (4096 in the paper) narrows the classifier for small data.
    Inputs need at least 63x63 pixels."""
    _check("alexnet", num_classes, in_channels)
    b = _Builder(seed, dtype)
    x = Input(name="input")
    f = Input(name="x")
    spec = [b.conv(in_channels, 64, 11, 4, 2, name="0"), ReLU(name="1"),
            LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0, name="norm1") if lrn else None,
            MaxPool2d(3, 2, name="2"),
            b.conv(64, 192, 5, padding=2, name="3"), ReLU(name="4"),
            LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0, name="norm2") if lrn else None,
            MaxPool2d(3, 2, name="5"),
            b.conv(192, 384, 3, padding=1, name="6"), ReLU(name="7"),
            b.conv(384, 256, 3, padding=1, name="8"), ReLU(name="9"),
            b.conv(256, 256, 3, padding=1, name="10"), ReLU(name="11"), MaxPool2d(3, 2, name="12")]
    features = Graph(f, _chain(f, [s for s in spec if s is not None]), name="features")
    classifier = Sequential(Dropout(dropout), b.linear(256 * 6 * 6, hidden), ReLU(), Dropout(dropout),
                            b.linear(hidden, hidden), ReLU(), b.linear(hidden, num_classes), name="classifier")
    y = _chain(x, [features, AdaptiveAvgPool2d(6, name="avgpool"), Flatten(name="flatten"), classifier])
    return Graph(x, y, name="alexnet")


# ================================================================ VGG

_VGG = {11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
        13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
        16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
        19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]}


def vgg(depth, batch_norm=False, num_classes=1000, in_channels=3, dropout=0.5, hidden=4096, seed=None,
        dtype=np.float32):
    """VGG-11/13/16/19 (Simonyan & Zisserman 2015; configurations A, B, D, E), torchvision's layout:

    features: for each width v of the configuration, Conv2d(c, v, 3, p=1)[, BatchNorm2d(v)], ReLU, and
    MaxPool2d(2) at each "M", numbered 0, 1, 2, ... as torchvision's nn.Sequential;
    avgpool: AdaptiveAvgPool2d(7); flatten;
    classifier: 0 Linear(25088, hidden), 1 ReLU, 2 Dropout, 3 Linear(hidden, hidden), 4 ReLU, 5 Dropout,
    6 Linear(hidden, num_classes).

    ``hidden`` is 4096 in the paper (and the default); a smaller one suits small data. Inputs need at
    least 32x32 pixels; at 224x224 the avgpool is the identity, at 32x32 it copies the 1x1 map 49 times,
    as torchvision does."""
    if depth not in _VGG:
        raise ValueError(f"zoo.vgg: depth must be one of {sorted(_VGG)}, got {depth!r}")
    _check(f"vgg{depth}", num_classes, in_channels)
    b = _Builder(seed, dtype)
    layers, c = [], in_channels
    for v in _VGG[depth]:
        if v == "M":
            layers.append(MaxPool2d(2))
        else:
            layers.append(b.conv(c, v, 3, padding=1))
            if batch_norm:
                layers.append(b.bn(v))
            layers.append(ReLU())
            c = v
    x = Input(name="input")
    features = Sequential(*layers, name="features")
    classifier = Sequential(b.linear(512 * 7 * 7, hidden), ReLU(), Dropout(dropout), b.linear(hidden, hidden), ReLU(),
                            Dropout(dropout), b.linear(hidden, num_classes), name="classifier")
    y = _chain(x, [features, AdaptiveAvgPool2d(7, name="avgpool"), Flatten(name="flatten"), classifier])
    return Graph(x, y, name=f"vgg{depth}" + ("_bn" if batch_norm else ""))


def _vgg_fn(depth, bn):
    def f(num_classes=1000, in_channels=3, dropout=0.5, hidden=4096, seed=None, dtype=np.float32):
        return vgg(depth, bn, num_classes, in_channels, dropout, hidden, seed, dtype)
    f.__name__ = f"vgg{depth}" + ("_bn" if bn else "")
    f.__doc__ = f"VGG-{depth}{' with BatchNorm after every convolution' if bn else ''}; see zoo.vgg."
    return f


vgg11, vgg13, vgg16, vgg19 = (_vgg_fn(d, False) for d in (11, 13, 16, 19))
vgg11_bn, vgg13_bn, vgg16_bn, vgg19_bn = (_vgg_fn(d, True) for d in (11, 13, 16, 19))


# ================================================================ ResNet

def _basic_block(b, cin, planes, stride, shortcut="B"):
    """conv1 3x3 (stride), bn1, relu, conv2 3x3, bn2, + shortcut, relu. Shortcut: identity, or when the
    shape changes a projection ``downsample`` = Sequential(0 Conv2d 1x1 stride, 1 BatchNorm2d) (option B),
    or ShortcutA (option A, CIFAR)."""
    x = Input(name="x")
    h = ReLU(name="relu")(b.bn(planes, name="bn1")(b.conv(cin, planes, 3, stride, 1, bias=False, name="conv1")(x)))
    h = b.bn(planes, name="bn2")(b.conv(planes, planes, 3, 1, 1, bias=False, name="conv2")(h))
    sc = x
    if stride != 1 or cin != planes:
        if shortcut == "A":
            sc = ShortcutA(stride, (planes - cin) // 2, name="shortcut")(x)
        else:
            sc = Sequential(b.conv(cin, planes, 1, stride, bias=False), b.bn(planes), name="downsample")(x)
    return Graph(x, ReLU(name="relu_out")(Add(name="add")(h, sc)))


def _bottleneck(b, cin, planes, stride, shortcut="B"):
    """ResNet v1.5 bottleneck (torchvision): conv1 1x1, bn1, conv2 3x3 (stride here, not in conv1), bn2,
    conv3 1x1 to 4 * planes, bn3, + shortcut (``downsample`` projection when the shape changes), relu."""
    out = planes * 4
    x = Input(name="x")
    h = ReLU(name="relu")(b.bn(planes, name="bn1")(b.conv(cin, planes, 1, bias=False, name="conv1")(x)))
    h = ReLU(name="relu2")(b.bn(planes, name="bn2")(b.conv(planes, planes, 3, stride, 1, bias=False, name="conv2")(h)))
    h = b.bn(out, name="bn3")(b.conv(planes, out, 1, bias=False, name="conv3")(h))
    sc = x
    if stride != 1 or cin != out:
        sc = Sequential(b.conv(cin, out, 1, stride, bias=False), b.bn(out), name="downsample")(x)
    return Graph(x, ReLU(name="relu_out")(Add(name="add")(h, sc)))


_RESNET = {18: ("basic", [2, 2, 2, 2]), 34: ("basic", [3, 4, 6, 3]), 50: ("bottleneck", [3, 4, 6, 3]),
           101: ("bottleneck", [3, 4, 23, 3]), 152: ("bottleneck", [3, 8, 36, 3])}


def resnet(depth, num_classes=1000, in_channels=3, width=64, seed=None, dtype=np.float32):
    """ResNet-18/34/50/101/152 (He et al. 2016) in torchvision's layout (v1.5 bottlenecks):

    conv1 Conv2d(in, 64, 7, 2, 3, bias=False), bn1, relu, maxpool MaxPool2d(3, 2, 1),
    layer1 .. layer4 (Sequential of blocks "0", "1", ...; widths 64, 128, 256, 512; stride 2 from layer2),
    avgpool (global average), flatten, fc Linear(512 * expansion, num_classes).

    Block parameters: ``layerS.B.conv1.weight``, ``.bn1.*``, ``.conv2``, ``.bn2`` (``.conv3``, ``.bn3``),
    ``.downsample.0.weight`` / ``.downsample.1.*``: torchvision's keys. ``width`` scales every stage
    (64 = torchvision's; a smaller one gives a slim network for small data). Any input size works."""
    if depth not in _RESNET:
        raise ValueError(f"zoo.resnet: depth must be one of {sorted(_RESNET)}, got {depth!r}")
    _check(f"resnet{depth}", num_classes, in_channels)
    kind, blocks = _RESNET[depth]
    block, exp = (_basic_block, 1) if kind == "basic" else (_bottleneck, 4)
    b = _Builder(seed, dtype)
    x = Input(name="input")
    h = _chain(x, [b.conv(in_channels, width, 7, 2, 3, bias=False, name="conv1"), b.bn(width, name="bn1"),
                   ReLU(name="relu"), MaxPool2d(3, 2, 1, name="maxpool")])
    c = width
    for i, n in enumerate(blocks):
        planes = width * 2 ** i
        stage = []
        for j in range(n):
            stage.append(block(b, c, planes, 2 if (i > 0 and j == 0) else 1))
            c = planes * exp
        h = Sequential(*stage, name=f"layer{i + 1}")(h)
    y = _chain(h, [GlobalAvgPool2d(name="avgpool"), Flatten(name="flatten"),
                   b.linear(c, num_classes, name="fc", init="he_uniform")])
    return Graph(x, y, name=f"resnet{depth}")


def resnet18(num_classes=1000, in_channels=3, width=64, seed=None, dtype=np.float32):
    """ResNet-18: basic blocks [2, 2, 2, 2]; see zoo.resnet."""
    return resnet(18, num_classes, in_channels, width, seed, dtype)


def resnet34(num_classes=1000, in_channels=3, width=64, seed=None, dtype=np.float32):
    """ResNet-34: basic blocks [3, 4, 6, 3]; see zoo.resnet."""
    return resnet(34, num_classes, in_channels, width, seed, dtype)


def resnet50(num_classes=1000, in_channels=3, width=64, seed=None, dtype=np.float32):
    """ResNet-50: bottleneck blocks [3, 4, 6, 3] (v1.5, as torchvision); see zoo.resnet."""
    return resnet(50, num_classes, in_channels, width, seed, dtype)


def resnet_cifar(depth=20, num_classes=10, in_channels=3, shortcut="A", width=16, seed=None, dtype=np.float32):
    """The CIFAR ResNets of He et al. (2016), section 4.2: depth = 6n + 2 (20, 32, 44, 56, 110).

    conv1 Conv2d(in, 16, 3, p=1, bias=False), bn1, relu, layer1 .. layer3 (n basic blocks each, widths
    16, 32, 64, stride 2 from layer2), avgpool (global average), flatten, fc Linear(64, num_classes). No
    max pooling: made for 32x32 inputs, and works on any size (8x8 digits included).

    shortcut "A" (the paper's CIFAR choice, parameter-free: subsample and zero-pad channels, ShortcutA)
    or "B" (1x1 projection + BN, named ``downsample`` as in torchvision). There is no torchvision model;
    the names follow the torchvision ResNet (``layer1.0.conv1.weight``, ``fc.weight``)."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"zoo.resnet_cifar: depth must be 6n + 2 (20, 32, 44, 56, 110), got {depth!r}")
    if shortcut not in ("A", "B"):
        raise ValueError(f"zoo.resnet_cifar: shortcut must be 'A' or 'B', got {shortcut!r}")
    _check(f"resnet{depth}", num_classes, in_channels)
    n = (depth - 2) // 6
    b = _Builder(seed, dtype)
    x = Input(name="input")
    h = _chain(x, [b.conv(in_channels, width, 3, 1, 1, bias=False, name="conv1"), b.bn(width, name="bn1"),
                   ReLU(name="relu")])
    c = width
    for i in range(3):
        planes = width * 2 ** i
        stage = []
        for j in range(n):
            stage.append(_basic_block(b, c, planes, 2 if (i > 0 and j == 0) else 1, shortcut))
            c = planes
        h = Sequential(*stage, name=f"layer{i + 1}")(h)
    y = _chain(h, [GlobalAvgPool2d(name="avgpool"), Flatten(name="flatten"),
                   b.linear(c, num_classes, name="fc", init="he_uniform")])
    return Graph(x, y, name=f"resnet{depth}")


def resnet20(num_classes=10, in_channels=3, shortcut="A", width=16, seed=None, dtype=np.float32):
    """CIFAR ResNet-20 (3 stages of 3 basic blocks, 0.27M parameters); see zoo.resnet_cifar."""
    return resnet_cifar(20, num_classes, in_channels, shortcut, width, seed, dtype)


def resnet32(num_classes=10, in_channels=3, shortcut="A", width=16, seed=None, dtype=np.float32):
    """CIFAR ResNet-32; see zoo.resnet_cifar."""
    return resnet_cifar(32, num_classes, in_channels, shortcut, width, seed, dtype)


def resnet56(num_classes=10, in_channels=3, shortcut="A", width=16, seed=None, dtype=np.float32):
    """CIFAR ResNet-56; see zoo.resnet_cifar."""
    return resnet_cifar(56, num_classes, in_channels, shortcut, width, seed, dtype)


MODELS = {f.__name__: f for f in (lenet5, alexnet, vgg11, vgg13, vgg16, vgg19, vgg11_bn, vgg13_bn, vgg16_bn,
                                  vgg19_bn, resnet18, resnet34, resnet50, resnet20, resnet32, resnet56)}


def get_model(name, **kw):
    """Build a zoo model by name (``ck.zoo.get_model("resnet18", num_classes=10)``)."""
    if name not in MODELS:
        raise ValueError(f"zoo.get_model: unknown model {name!r}; expected one of {sorted(MODELS)}")
    return MODELS[name](**kw)
