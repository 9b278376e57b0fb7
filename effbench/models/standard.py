"""Standard architectures that published device figures use, in plain torch with seeded random weights:
their work (MACs, bytes, nodes) is what a projection needs, and nothing is downloaded.

- ResNet-50 v1.5 (He et al. 2016; v1.5 strides the 3x3 conv of each bottleneck, as torchvision and
  MLPerf's reference do): 25.6 M parameters, 4.1 G MACs at 224x224.
- MobileNetV2 1.0/224 (Sandler et al. 2018): 3.5 M parameters, 300 M MACs.
- MobileNet v1 1.0/224 (Howard et al. 2017): 4.2 M parameters, 569 M MACs.
- ResNet-8 of MLPerf Tiny's image classification (CIFAR-10, 32x32): 78 k parameters, 12.5 M MACs.
"""
from __future__ import annotations

from torch import nn

from effbench.models.standard_names import STANDARD_NAMES


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: type | None = nn.ReLU) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * self.expansion
        self.body = nn.Sequential(_conv_bn(cin, width, 1), _conv_bn(width, width, 3, stride),
                                  _conv_bn(width, cout, 1, act=None))
        self.down = _conv_bn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else None
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.body(x) + (self.down(x) if self.down is not None else x))


class ResNet50(nn.Module):
    """ResNet-50 v1.5 for 224x224 ImageNet, 1000 classes."""

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1)]
        cin = 64
        for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            for i in range(blocks):
                layers.append(Bottleneck(cin, width, stride if i == 0 else 1))
                cin = width * Bottleneck.expansion
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes))

    def forward(self, x):
        return self.head(self.features(x))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = [] if expand == 1 else [_conv_bn(cin, hidden, 1, act=nn.ReLU6)]
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6), _conv_bn(hidden, cout, 1, act=None)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class MobileNetV2(nn.Module):
    """MobileNetV2, width 1.0, 224x224, 1000 classes."""

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(3, 32, 3, 2, act=nn.ReLU6)]
        cin = 32
        for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                           (6, 160, 3, 2), (6, 320, 1, 1)):
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(_conv_bn(cin, 1280, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(1280, classes))

    def forward(self, x):
        return self.head(self.features(x))


class MobileNetV1(nn.Module):
    """MobileNet v1, width 1.0, 224x224, 1000 classes: depthwise-separable convolutions."""

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(3, 32, 3, 2)]
        cin = 32
        for cout, s in ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *[(512, 1)] * 5, (1024, 2), (1024, 1)):
            layers += [_conv_bn(cin, cin, 3, s, groups=cin), _conv_bn(cin, cout, 1)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1024, classes))

    def forward(self, x):
        return self.head(self.features(x))


class _TinyBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn(cin, cout, 3, stride), _conv_bn(cout, cout, 3, act=None))
        self.down = nn.Conv2d(cin, cout, 1, stride) if stride != 1 or cin != cout else None
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.body(x) + (self.down(x) if self.down is not None else x))


class ResNet8(nn.Module):
    """MLPerf Tiny's image-classification ResNet-8 (CIFAR-10, 32x32x3): a 16-filter stem, then residual
    stacks of 16, 32 and 64 filters, average pooling and a 10-way dense layer."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(_conv_bn(3, 16, 3), _TinyBlock(16, 16, 1), _TinyBlock(16, 32, 2),
                                      _TinyBlock(32, 64, 2))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, classes))

    def forward(self, x):
        return self.head(self.features(x))


def _image(size: int) -> dict:
    return {"x": {"shape": ["batch", 3, size, size], "dtype": "float32", "range": (0.0, 1.0)}}


# name -> (class, input specs): random-weight models (no dataset; quality is not what they are for)
STANDARD = {
    "resnet50": (ResNet50, _image(224)),
    "mobilenet-v2": (MobileNetV2, _image(224)),
    "mobilenet-v1": (MobileNetV1, _image(224)),
    "resnet8": (ResNet8, _image(32)),
}
assert tuple(STANDARD) == STANDARD_NAMES
