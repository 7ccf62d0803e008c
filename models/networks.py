"""The seed architectures, built from MONAI networks and blocks (no torchvision).

- Seed 000 (Vu et al.): MONAI `UNet`, 2D, 4 encoding / 3 decoding levels, 4 residual units,
  PReLU, batch norm — `ct_residual_unet`.
- Seed 001 (Fitzpatrick et al.): a residual V-Net-like 3D network, 5x5x5 convolutions, SELU —
  `IliopsoasNet`, assembled from MONAI `Convolution` blocks as the paper describes it.
- Seed 002 (Kim et al.): MONAI `UNETR` — `thigh_unetr`.
- Seed 004 (Ryu et al.): a Gaussian regressor (mu, sigma) on a MONAI backbone with global
  average pooling and a dense layer — `GaussianRegressor`; deep ensembles live in `cxr`.

Networks return logits; the sigmoid/softmax each paper applies is part of the bundle's
post-processing (and of the loss during training), so the function is the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from monai.networks.nets import UNETR, UNet
from torch import nn


def ct_residual_unet(
    out_channels: int = 13,
    channels: Sequence[int] = (16, 32, 64, 128),
    num_res_units: int = 4,
    in_channels: int = 1,
) -> UNet:
    """Seed 000: 12 muscle groups + background on 2D axial slices.

    Four channel entries give MONAI's UNet 4 encoding blocks (3 strided + bottom) and 3
    decoding blocks, as in the paper's Fig. 1; the paper does not give widths, so the
    defaults are MONAI's tutorial widths.
    """
    return UNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=tuple(channels),
        strides=(2,) * (len(channels) - 1),
        num_res_units=num_res_units,
        act="PRELU",
        norm="BATCH",
    )


class _ResidualStage(nn.Module):
    """n successive convolutions whose output is added to (a projection of) the input."""

    def __init__(self, in_channels: int, out_channels: int, convs: int, kernel_size: int) -> None:
        super().__init__()
        layers = []
        for n in range(convs):
            layers.append(
                Convolution(
                    spatial_dims=3,
                    in_channels=in_channels if n == 0 else out_channels,
                    out_channels=out_channels,
                    kernel_size=kernel_size,
                    act="SELU",
                    norm=None,
                )
            )
        self.convs = nn.Sequential(*layers)
        self.skip = (
            nn.Identity()
            if in_channels == out_channels
            else Convolution(3, in_channels, out_channels, kernel_size=1, act=None, norm=None)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x) + self.skip(x)


def _down(in_channels: int, out_channels: int) -> Convolution:
    """2x2x2 convolution, stride 2: halves the resolution (V-Net style, no pooling)."""
    return Convolution(
        3, in_channels, out_channels, strides=2, kernel_size=2, padding=0, act="SELU", norm=None
    )


def _up(in_channels: int, out_channels: int) -> Convolution:
    """2x2x2 transposed convolution, stride 2: doubles the resolution."""
    return Convolution(
        3,
        in_channels,
        out_channels,
        strides=2,
        kernel_size=2,
        padding=0,
        output_padding=0,
        act="SELU",
        norm=None,
        is_transposed=True,
    )


class IliopsoasNet(nn.Module):
    """Seed 001's network: I -> D(2,32) -> D(3,64) -> D(3,128) -> L -> U(3,128) -> U(3,64) ->
    U(3,32) -> F, residual blocks, SELU, skip connections by concatenation.

    `filters` = (I, I's strided output, D1, D2, D3) widths; the paper's are (8, 16, 32, 64,
    128). It leaves the strided convolutions' widths after I open; they keep their block's
    width here. Input sizes must be divisible by 16 (four halvings; 96x96x192 in the paper).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        filters: Sequence[int] = (8, 16, 32, 64, 128),
        kernel_size: int = 5,
    ) -> None:
        super().__init__()
        f0, f1, f2, f3, f4 = filters
        k = kernel_size
        self.initial = _ResidualStage(in_channels, f0, 1, k)
        self.initial_down = _down(f0, f1)
        self.d1, self.d1_down = _ResidualStage(f1, f2, 2, k), _down(f2, f2)
        self.d2, self.d2_down = _ResidualStage(f2, f3, 3, k), _down(f3, f3)
        self.d3, self.d3_down = _ResidualStage(f3, f4, 3, k), _down(f4, f4)
        self.lowest, self.lowest_up = _ResidualStage(f4, f4, 3, k), _up(f4, f3)
        self.u3, self.u3_up = _ResidualStage(f3 + f4, f4, 3, k), _up(f4, f3)
        self.u2, self.u2_up = _ResidualStage(f3 + f3, f3, 3, k), _up(f3, f2)
        self.u1, self.u1_up = _ResidualStage(f2 + f2, f2, 3, k), _up(f2, f1)
        self.final = _ResidualStage(f1 + f0, f1, 1, k)
        self.head = Convolution(3, f1, out_channels, kernel_size=1, act=None, norm=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = self.initial(x)
        s1 = self.d1(self.initial_down(s0))
        s2 = self.d2(self.d1_down(s1))
        s3 = self.d3(self.d2_down(s2))
        y = self.lowest_up(self.lowest(self.d3_down(s3)))
        y = self.u3_up(self.u3(torch.cat([y, s3], dim=1)))
        y = self.u2_up(self.u2(torch.cat([y, s2], dim=1)))
        y = self.u1_up(self.u1(torch.cat([y, s1], dim=1)))
        return self.head(self.final(torch.cat([y, s0], dim=1)))


def thigh_unetr(
    out_channels: int = 28,
    img_size: Sequence[int] = (96, 96, 96),
    feature_size: int = 16,
    hidden_size: int = 768,
    mlp_dim: int = 3072,
    num_heads: int = 12,
    in_channels: int = 1,
) -> UNETR:
    """Seed 002: UNETR, 12 transformer layers of hidden size 768 on 96^3 patches, instance
    norm and residual decoder blocks; 27 structures + background.

    The paper says its model "outputs 29 channels corresponding to 27 ... segments plus
    background"; 27 + 1 = 28, which is what the label list needs, so 28 is used.
    """
    return UNETR(
        in_channels=in_channels,
        out_channels=out_channels,
        img_size=tuple(img_size),
        feature_size=feature_size,
        hidden_size=hidden_size,
        mlp_dim=mlp_dim,
        num_heads=num_heads,
        norm_name="instance",
        res_block=True,
    )


class GaussianRegressor(nn.Module):
    """Seed 004's step-1 member: backbone -> (mu, sigma) of a Gaussian.

    The backbone ends in global average pooling and a dense layer with two outputs (MONAI
    `ResNet` with ``num_classes=2`` does exactly that); sigma = softplus(raw) + 1e-6 keeps it
    positive, as in Lakshminarayanan et al.'s deep ensembles the paper follows.
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raw = self.backbone(x)
        mu = raw[:, 0]
        sigma = nn.functional.softplus(raw[:, 1]) + 1e-6
        return torch.stack([mu, sigma], dim=1)
