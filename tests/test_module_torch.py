# Torch-style models against torch: the issue's example (Block + Net) and a torchvision-style ResNet-18 written as
# a ck.Module. The same class in torch, its state_dict() loaded with no renaming, then forward, the loss and every
# parameter gradient compared: max|ours - torch| <= tol * max|torch| per tensor (float64 1e-10, float32 1e-4).
import numpy as np
import pytest

import cnnkit as ck
import cnnkit.functional as F

torch = pytest.importorskip("torch")
tnn, tF = torch.nn, torch.nn.functional
torch.set_num_threads(1)


# ---------------------------------------------------------------- the issue's example, both ways
class Block(ck.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = ck.Conv2d(c, c, 3, padding=1); self.bn1 = ck.BatchNorm2d(c)   # noqa: E702
        self.conv2 = ck.Conv2d(c, c, 3, padding=1); self.bn2 = ck.BatchNorm2d(c)   # noqa: E702

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + x)      # + on recorded values: a residual add


class Net(ck.Module):
    def __init__(self):
        super().__init__()
        self.stem = ck.Conv2d(3, 16, 3, padding=1); self.block = Block(16); self.fc = ck.Linear(16, 10)  # noqa: E702

    def forward(self, x):
        x = self.block(F.relu(self.stem(x)))
        return self.fc(F.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class TBlock(tnn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = tnn.Conv2d(c, c, 3, padding=1); self.bn1 = tnn.BatchNorm2d(c)   # noqa: E702
        self.conv2 = tnn.Conv2d(c, c, 3, padding=1); self.bn2 = tnn.BatchNorm2d(c)   # noqa: E702

    def forward(self, x):
        y = tF.relu(self.bn1(self.conv1(x)))
        return tF.relu(self.bn2(self.conv2(y)) + x)


class TNet(tnn.Module):
    def __init__(self):
        super().__init__()
        self.stem = tnn.Conv2d(3, 16, 3, padding=1); self.block = TBlock(16); self.fc = tnn.Linear(16, 10)  # noqa: E702

    def forward(self, x):
        x = self.block(tF.relu(self.stem(x)))
        return self.fc(torch.flatten(tF.adaptive_avg_pool2d(x, 1), 1))


# ---------------------------------------------------------------- ResNet-18 as torchvision writes it
class BasicBlock(ck.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = ck.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = ck.BatchNorm2d(planes)
        self.relu = ck.ReLU()
        self.conv2 = ck.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = ck.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:                     # a Python branch on the module's structure
            identity = self.downsample(x)
        out = out + identity
        return self.relu(out)                               # one ReLU layer called twice per block


class ResNet18(ck.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.inplanes = 64
        self.conv1 = ck.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = ck.BatchNorm2d(64)
        self.relu = ck.ReLU()
        self.maxpool = ck.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, 2)
        self.layer2 = self._make_layer(128, 2, stride=2)
        self.layer3 = self._make_layer(256, 2, stride=2)
        self.layer4 = self._make_layer(512, 2, stride=2)
        self.avgpool = ck.AdaptiveAvgPool2d((1, 1))
        self.fc = ck.Linear(512, num_classes)

    def _make_layer(self, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = ck.Sequential(ck.Conv2d(self.inplanes, planes, 1, stride=stride, bias=False),
                                       ck.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return ck.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(F.flatten(self.avgpool(x), 1))


class TBasicBlock(tnn.Module):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = tnn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = tnn.BatchNorm2d(planes)
        self.relu = tnn.ReLU(inplace=True)
        self.conv2 = tnn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = tnn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class TResNet18(tnn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.inplanes = 64
        self.conv1 = tnn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = tnn.BatchNorm2d(64)
        self.relu = tnn.ReLU(inplace=True)
        self.maxpool = tnn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, 2)
        self.layer2 = self._make_layer(128, 2, stride=2)
        self.layer3 = self._make_layer(256, 2, stride=2)
        self.layer4 = self._make_layer(512, 2, stride=2)
        self.avgpool = tnn.AdaptiveAvgPool2d((1, 1))
        self.fc = tnn.Linear(512, num_classes)

    def _make_layer(self, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = tnn.Sequential(tnn.Conv2d(self.inplanes, planes, 1, stride=stride, bias=False),
                                        tnn.BatchNorm2d(planes))
        layers = [TBasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [TBasicBlock(planes, planes) for _ in range(1, blocks)]
        return tnn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _close(ours, theirs, tol, what, floor=1e-30):
    """max|ours - theirs| <= tol * max(max|theirs|, floor)."""
    theirs = theirs.detach().numpy() if hasattr(theirs, "detach") else np.asarray(theirs)
    scale = max(float(np.abs(theirs).max()), floor)
    err = float(np.abs(np.asarray(ours, dtype=np.float64) - theirs).max())
    assert err <= tol * scale, f"{what}: max error {err:.3e} > {tol:g} * {scale:.3e}"


def _compare(ck_model, t_model, shape, dtype, tol, label_smoothing=0.0):
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    t_model = t_model.to(tdtype)
    torch.manual_seed(0)
    for m in t_model.modules():          # non-trivial BatchNorm affine parameters and running statistics
        if isinstance(m, tnn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(0.5, 1.5)
    ck_model.to(dtype)
    sd = t_model.state_dict()
    assert list(ck_model.state_dict()) == list(sd)           # the same names in the same order
    missing, unexpected = ck_model.load_state_dict(sd)       # no renaming
    assert missing == [] and unexpected == []
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(dtype)
    y = rng.integers(0, 10, shape[0])
    criterion = ck.nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    out = ck_model(x)
    loss = criterion(out, y)
    ck_model.zero_grad()
    loss.backward()
    xt = torch.tensor(x)
    outt = t_model(xt)
    losst = tnn.CrossEntropyLoss(label_smoothing=label_smoothing)(outt, torch.tensor(y))
    losst.backward()
    _close(out.data, outt, tol, "output")
    assert abs(loss.item() - losst.item()) <= tol * abs(losst.item())
    tp = dict(t_model.named_parameters())
    names = [n for n, _ in ck_model.named_parameters()]
    assert names == list(tp)
    # A conv bias feeding a BatchNorm has a gradient of exactly 0 in exact arithmetic (the mean is subtracted),
    # rounding noise in both (float32: ~1e-7 of the terms summed): a tensor whose gradients are below 1e-2 of the
    # model's largest is compared on that scale.
    floor = 1e-2 * max(float(p.grad.abs().max()) for p in tp.values())
    for n, p in ck_model.named_parameters():
        _close(p.grad, tp[n].grad, tol, f"grad {n}", floor)
    tsd = t_model.state_dict()
    for k, v in ck_model.state_dict().items():                # running statistics updated alike
        _close(v, tsd[k], tol, f"state {k}")
    return len(names)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 1e-4)], ids=["float64", "float32"])
def test_issue_example_equals_torch(dtype, tol):
    assert _compare(Net(), TNet(), (4, 3, 8, 8), dtype, tol) == 12


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 1e-4)], ids=["float64", "float32"])
def test_resnet18_module_equals_torch(dtype, tol):
    # 64x64 inputs and a batch of 4 leave 16 values per channel for layer4's BatchNorms: with 2 (a 32x32 batch of 2,
    # 1x1 maps) the batch variance is so ill-conditioned that rounding alone moves float32 outputs by 1e-3
    n = _compare(ResNet18(), TResNet18(), (4, 3, 64, 64), dtype, tol, label_smoothing=0.1)
    assert n == 62                                            # torchvision's resnet18 has 62 parameter tensors


def test_resnet18_trains_with_sgd_as_torch_for_three_steps():
    m, t = ResNet18(), TResNet18().double()
    m.to(np.float64).load_state_dict(t.state_dict())
    opt = ck.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    topt = torch.optim.SGD(t.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    rng = np.random.default_rng(2)
    for _ in range(3):
        x, y = rng.standard_normal((4, 3, 64, 64)), rng.integers(0, 10, 4)
        loss = ck.nn.CrossEntropyLoss()(m(x), y)
        opt.zero_grad(), loss.backward(), opt.step()
        lt = tnn.CrossEntropyLoss()(t(torch.tensor(x)), torch.tensor(y))
        topt.zero_grad(), lt.backward(), topt.step()
        assert abs(loss.item() - lt.item()) <= 1e-9 * abs(lt.item())
    tsd = t.state_dict()
    for k, v in m.state_dict().items():
        _close(v, tsd[k], 1e-9, k)


# ---------------------------------------------------------------- the zoo's torch files, on a Module
def _trained_stats(model):
    """Move the BatchNorm running statistics off their initial values (a few training forwards)."""
    rng = np.random.default_rng(7)
    model.train()
    for _ in range(3):
        model(rng.standard_normal((4, 3, 8, 8)).astype(np.float32))
    model.eval()
    return model


def test_module_exports_a_file_torch_loads_strictly(tmp_path):
    from safetensors.torch import load_file
    net = Net()
    net.manual_seed(3)
    _trained_stats(net)
    path = tmp_path / "net.safetensors"
    ck.zoo.export_torch_state_dict(net, path)
    tnet = TNet()
    result = tnet.load_state_dict(load_file(str(path)), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    tnet.eval()
    tsd = tnet.state_dict()
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(tsd[k].numpy(), np.asarray(v), err_msg=k)
    assert int(tsd["block.bn1.num_batches_tracked"]) == 3
    x = np.random.default_rng(8).standard_normal((2, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        yt = tnet(torch.tensor(x)).numpy()
    np.testing.assert_allclose(net(x).data, yt, rtol=0, atol=1e-5)


@pytest.mark.parametrize("fmt", ["safetensors", "pth", "pth-checkpoint"])
def test_module_loads_a_torch_saved_file(tmp_path, fmt):
    torch.manual_seed(4)
    tnet = TNet()
    tnet.train()
    with torch.no_grad():
        for _ in range(3):
            tnet(torch.randn(4, 3, 8, 8))
    tnet.eval()
    sd = tnet.state_dict()
    if fmt == "safetensors":
        from safetensors.torch import save_file
        path = tmp_path / "t.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    elif fmt == "pth":
        path = tmp_path / "t.pth"
        torch.save(sd, path)
    else:
        path = tmp_path / "t.pth"
        torch.save({"state_dict": sd, "epoch": 3}, path)
    net = Net()
    missing, unexpected = net.load_state_dict(path)
    assert missing == [] and unexpected == []
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(np.asarray(v), sd[k].numpy(), err_msg=k)
    net.eval()
    x = np.random.default_rng(9).standard_normal((2, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        yt = tnet(torch.tensor(x)).numpy()
    np.testing.assert_allclose(net(x).data, yt, rtol=0, atol=1e-5)
