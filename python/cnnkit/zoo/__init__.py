"""The model zoo and transfer learning.

    import cnnkit as ck
    m = ck.zoo.resnet18(num_classes=1000)
    ck.zoo.load_torch_state_dict(m, "resnet18.safetensors")   # torchvision keys; .pth needs torch
    m.replace_head(10); m.freeze(up_to="layer3")             # fine-tune layer4 and the new fc
    opt = ck.optim.SGD(ck.zoo.param_groups(m, {"layer4": 1e-3, "fc": 1e-2}), lr=1e-3, momentum=0.9)

Architectures (cnnkit.zoo.models): lenet5, alexnet (with LRN), vgg11/13/16/19 and their _bn twins,
resnet18/34/50 (torchvision layouts and key names) and the CIFAR resnet20/32/56. Weights in and out:
cnnkit.state_dict. Features at any stage and per-layer learning rates: cnnkit.zoo.transfer.
"""
from .layers import AdaptiveAvgPool2d, ShortcutA
from .models import (MODELS, alexnet, get_model, lenet5, resnet, resnet18, resnet20, resnet32, resnet34, resnet50,
                     resnet56, resnet_cifar, vgg, vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg19, vgg19_bn)
from ..state_dict import StateDictError, export_torch_state_dict, load_torch_state_dict, state_dict
from .transfer import features, param_groups

__all__ = ["AdaptiveAvgPool2d", "ShortcutA", "MODELS", "get_model", "lenet5", "alexnet", "vgg", "vgg11", "vgg13",
           "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn", "resnet", "resnet18", "resnet34",
           "resnet50", "resnet_cifar", "resnet20", "resnet32", "resnet56", "load_torch_state_dict",
           "export_torch_state_dict", "state_dict", "StateDictError", "features", "param_groups"]
