"""MobileNetV2 (Sandler et al., 2018, "MobileNetV2: Inverted Residuals and Linear Bottlenecks")
in plain torch, with torchvision's parameter names so its ImageNet checkpoint loads unchanged.

torchvision itself cannot be imported next to our CPU torch wheel, so the ~40 lines of the
architecture live here. The forward pass also returns the last feature map, whose product with
the classifier weights gives class-activation maps (Zhou et al., 2016, "Learning Deep Features
for Discriminative Localization").
"""

from __future__ import annotations

import torch
from torch import nn

#: ImageNet normalisation of torchvision's checkpoints (RGB, inputs scaled to 0..1 first).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# (expansion t, output channels c, repeats n, first stride s), as in the paper's Table 2.
_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
             (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _conv_bn_relu(cin: int, cout: int, k: int = 1, stride: int = 1,
                  groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class _InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, t: int):
        super().__init__()
        hidden = cin * t
        layers = [_conv_bn_relu(cin, hidden)] if t != 1 else []
        layers += [_conv_bn_relu(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (width 1.0) with torchvision's module layout (``features.N...``,
    ``classifier.1.weight``/``bias``), 1000 ImageNet-1k classes."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        layers, cin = [_conv_bn_relu(3, 32, 3, 2)], 32
        for t, c, n, s in _SETTINGS:
            for i in range(n):
                layers.append(_InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(_conv_bn_relu(cin, 1280))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Classify normalised images and keep the last feature map.

        Args:
            x: ``[B, 3, H, W]`` float32 RGB, scaled to 0..1 then normalised with
                :data:`IMAGENET_MEAN`/:data:`IMAGENET_STD` (see :func:`preprocess`).

        Returns:
            ``(logits, features)``: ``[B, 1000]`` float32 ImageNet logits (softmax gives the
            class probabilities) and ``[B, 1280, ceil(H/32), ceil(W/32)]`` float32 feature map
            (``7x7`` for 224x224). ``logits == classifier(mean over space of features)``, so
            ``einsum("kc,bchw->bkhw", classifier[1].weight, features)`` is the class-activation map.
        """
        f = self.features(x)
        return self.classifier(f.mean(dim=(2, 3))), f


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """ImageNet input normalisation.

    Args:
        images: ``[B, H, W, 3]`` uint8 RGB (any H, W; 224x224 is what the network was trained on).

    Returns:
        ``[B, 3, H, W]`` float32: ``(x / 255 - mean) / std``.
    """
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every ``Conv2d -> BatchNorm2d`` pair into the convolution (inference only).

    ``BN(conv(x)) = gamma * (W*x - mean) / sqrt(var + eps) + beta`` is a convolution with
    weights ``W * gamma / sqrt(var + eps)`` and a bias; the BatchNorm becomes ``Identity``.
    Outputs stay the same (to float rounding, ~1e-5 relative) and the forward pass gets ~25 %
    faster on CPU. The model is changed in place (its state-dict keys then differ from
    torchvision's) and returned.
    """
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)):
                continue
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
            fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                              conv.padding, groups=conv.groups, bias=True)
            fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
            fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
            seq[i], seq[i + 1] = fused, nn.Identity()
    return model


def load_mobilenet(device: str = "cpu", fuse: bool = False) -> MobileNetV2:
    """The bundled ImageNet MobileNetV2 (torchvision's ``mobilenet_v2-b0353104.pth``), in eval mode.

    The weights file is registry entry ``instrument-recognizer``; it is checked against its
    sha256 and loaded with ``strict=True`` (every key and shape must match).

    Args:
        device: torch device.
        fuse: fold the BatchNorms into the convolutions (:func:`fuse_batchnorm`): same outputs,
            faster, inference only.

    Raises:
        AvsplitError: the weights file is missing or does not match its sha256.
    """
    from avsplit.models.registry import weights_path

    state = torch.load(weights_path("instrument-recognizer"), map_location="cpu", weights_only=True)
    model = MobileNetV2()
    model.load_state_dict(state, strict=True)
    model.eval()
    if fuse:
        fuse_batchnorm(model)
    return model.to(device)
