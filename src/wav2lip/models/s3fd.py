"""S3FD face detector (Zhang et al., ICCV 2017) as used by the Wav2Lip reference (spec section 6).

The module returns the twelve raw head outputs; decoding and NMS live in `wav2lip.faces.boxes`,
so the network stays a pure tensor function whose keys match the authors' `s3fd.pth`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Per-channel mean subtracted from the RGB frame before the trunk (spec section 6).
S3FD_MEAN_RGB = (104.0, 117.0, 123.0)
# Strides of the six detection levels (conv3_3, conv4_3, conv5_3, fc7, conv6_2, conv7_2).
S3FD_STRIDES = (4, 8, 16, 32, 64, 128)


class L2Norm(nn.Module):
    """Channel-wise L2 normalisation with a learned per-channel scale (the `*_norm` keys)."""

    def __init__(self, channels: int, eps: float = 1e-10) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + self.eps
        return x / norm * self.weight.view(1, -1, 1, 1)


def _conv3(cin: int, cout: int, stride: int = 1, padding: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, padding)


class S3FD(nn.Module):
    """VGG16-based single-shot face detector; input RGB float minus `S3FD_MEAN_RGB`, NCHW."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1_1, self.conv1_2 = _conv3(3, 64), _conv3(64, 64)
        self.conv2_1, self.conv2_2 = _conv3(64, 128), _conv3(128, 128)
        self.conv3_1, self.conv3_2, self.conv3_3 = _conv3(128, 256), _conv3(256, 256), _conv3(256, 256)
        self.conv4_1, self.conv4_2, self.conv4_3 = _conv3(256, 512), _conv3(512, 512), _conv3(512, 512)
        self.conv5_1, self.conv5_2, self.conv5_3 = _conv3(512, 512), _conv3(512, 512), _conv3(512, 512)
        self.fc6 = _conv3(512, 1024, padding=3)
        self.fc7 = nn.Conv2d(1024, 1024, 1)
        self.conv6_1 = nn.Conv2d(1024, 256, 1)
        self.conv6_2 = _conv3(256, 512, stride=2)
        self.conv7_1 = nn.Conv2d(512, 128, 1)
        self.conv7_2 = _conv3(128, 256, stride=2)
        self.conv3_3_norm = L2Norm(256)
        self.conv4_3_norm = L2Norm(512)
        self.conv5_3_norm = L2Norm(512)
        self.conv3_3_norm_mbox_conf, self.conv3_3_norm_mbox_loc = _conv3(256, 4), _conv3(256, 4)
        self.conv4_3_norm_mbox_conf, self.conv4_3_norm_mbox_loc = _conv3(512, 2), _conv3(512, 4)
        self.conv5_3_norm_mbox_conf, self.conv5_3_norm_mbox_loc = _conv3(512, 2), _conv3(512, 4)
        self.fc7_mbox_conf, self.fc7_mbox_loc = _conv3(1024, 2), _conv3(1024, 4)
        self.conv6_2_mbox_conf, self.conv6_2_mbox_loc = _conv3(512, 2), _conv3(512, 4)
        self.conv7_2_mbox_conf, self.conv7_2_mbox_loc = _conv3(256, 2), _conv3(256, 4)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return [conf, loc] for each of the six levels (12 tensors); conf logits have 2 channels."""
        relu, pool = F.relu, F.max_pool2d
        h = pool(relu(self.conv1_2(relu(self.conv1_1(x)))), 2, 2)
        h = pool(relu(self.conv2_2(relu(self.conv2_1(h)))), 2, 2)
        f3 = relu(self.conv3_3(relu(self.conv3_2(relu(self.conv3_1(h))))))
        f4 = relu(self.conv4_3(relu(self.conv4_2(relu(self.conv4_1(pool(f3, 2, 2)))))))
        f5 = relu(self.conv5_3(relu(self.conv5_2(relu(self.conv5_1(pool(f4, 2, 2)))))))
        fc7 = relu(self.fc7(relu(self.fc6(pool(f5, 2, 2)))))
        f6 = relu(self.conv6_2(relu(self.conv6_1(fc7))))
        f7 = relu(self.conv7_2(relu(self.conv7_1(f6))))
        f3, f4, f5 = self.conv3_3_norm(f3), self.conv4_3_norm(f4), self.conv5_3_norm(f5)

        conf1 = self.conv3_3_norm_mbox_conf(f3)
        # Max-out background: the first head predicts three background logits and one face logit.
        conf1 = torch.cat([conf1[:, :3].amax(dim=1, keepdim=True), conf1[:, 3:]], dim=1)
        return [
            conf1, self.conv3_3_norm_mbox_loc(f3),
            self.conv4_3_norm_mbox_conf(f4), self.conv4_3_norm_mbox_loc(f4),
            self.conv5_3_norm_mbox_conf(f5), self.conv5_3_norm_mbox_loc(f5),
            self.fc7_mbox_conf(fc7), self.fc7_mbox_loc(fc7),
            self.conv6_2_mbox_conf(f6), self.conv6_2_mbox_loc(f6),
            self.conv7_2_mbox_conf(f7), self.conv7_2_mbox_loc(f7),
        ]
