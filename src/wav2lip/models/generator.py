"""The Wav2Lip generator (spec section 4, spec/layers.md): mel window + masked/reference face -> face.

Module paths match the authors' checkpoints (`face_encoder_blocks.0.0.conv_block.0.weight`, ...), so
`wav2lip.pth` and `wav2lip_gan.pth` load unmodified. `width` scales every internal channel count
(same layout and key names) to make small models for tests, quick training runs and distilled
students; `residual=False` leaves out the residual ConvBlocks (about half of the convolutions) while
every remaining module keeps its index, so the teacher's key names stay valid for what remains.
`mel_offset` says which audio the network was trained to hear for a frame: the authors' 0.2 s window
starts at the frame's start (0); a live student's starts `mel_offset` mel steps (12.5 ms each) earlier
when negative, so it needs less audio after the frame (kernel.lead_samples). It changes no layer.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .blocks import ConvBlock, ConvTransposeBlock, scaled

# Face crop side and mel window shape the generator is built for (spec section 4).
FACE_SIZE = 96
MEL_SHAPE = (1, 80, 16)


class Wav2Lip(nn.Module):
    """Face encoder (96 -> 1), audio encoder (80x16 -> 1x1) and a decoder with skip connections."""

    def __init__(self, width: float = 1.0, residual: bool = True, mel_offset: int = 0) -> None:
        super().__init__()
        self.width = width
        self.residual = residual
        self.mel_offset = mel_offset

        def c(n: int) -> int:
            return scaled(n, width)

        def res(n: int) -> ConvBlock | None:
            return ConvBlock(c(n), c(n), 3, 1, 1, residual=True) if residual else None

        self.face_encoder_blocks = nn.ModuleList([
            _seq(ConvBlock(6, c(16), 7, 1, 3)),  # 96
            _seq(ConvBlock(c(16), c(32), 3, 2, 1), res(32), res(32)),  # 48
            _seq(ConvBlock(c(32), c(64), 3, 2, 1), res(64), res(64), res(64)),  # 24
            _seq(ConvBlock(c(64), c(128), 3, 2, 1), res(128), res(128)),  # 12
            _seq(ConvBlock(c(128), c(256), 3, 2, 1), res(256), res(256)),  # 6
            _seq(ConvBlock(c(256), c(512), 3, 2, 1), res(512)),  # 3
            _seq(ConvBlock(c(512), c(512), 3, 1, 0), ConvBlock(c(512), c(512), 1, 1, 0)),  # 1
        ])
        self.audio_encoder = _seq(
            ConvBlock(1, c(32), 3, 1, 1), res(32), res(32),
            ConvBlock(c(32), c(64), 3, (3, 1), 1), res(64), res(64),
            ConvBlock(c(64), c(128), 3, 3, 1), res(128), res(128),
            ConvBlock(c(128), c(256), 3, (3, 2), 1), res(256),
            ConvBlock(c(256), c(512), 3, 1, 0), ConvBlock(c(512), c(512), 1, 1, 0),
        )

        def up(cin: int, cout: int, stride: int = 2) -> ConvTransposeBlock:
            if stride == 1:
                return ConvTransposeBlock(cin, cout, 3, 1, 0)
            return ConvTransposeBlock(cin, cout, 3, 2, 1, output_padding=1)

        # Each decoder stage's input is the previous stage's output concatenated with the face
        # feature of the same resolution (deepest first), hence the sums.
        self.face_decoder_blocks = nn.ModuleList([
            _seq(ConvBlock(c(512), c(512), 1, 1, 0)),  # 1
            _seq(up(c(512) + c(512), c(512), stride=1), res(512)),  # 3
            _seq(up(c(512) + c(512), c(512)), res(512), res(512)),  # 6
            _seq(up(c(512) + c(256), c(384)), res(384), res(384)),  # 12
            _seq(up(c(384) + c(128), c(256)), res(256), res(256)),  # 24
            _seq(up(c(256) + c(64), c(128)), res(128), res(128)),  # 48
            _seq(up(c(128) + c(32), c(64)), res(64), res(64)),  # 96
        ])
        self.output_block = _seq(
            ConvBlock(c(64) + c(16), c(32), 3, 1, 1), nn.Conv2d(c(32), 3, 1), nn.Sigmoid()
        )

    def forward(self, audio: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        """Per frame: (B,1,80,16) + (B,6,96,96) -> (B,3,96,96).

        Sequence: (B,T,1,80,16) + (B,6,T,96,96) -> (B,3,T,96,96), the T frames folded into the
        batch frame-major (all items of frame 0, then frame 1, ...) as the reference does, so that
        BatchNorm in training mode sees the same batches.
        """
        sequence = face.dim() == 5
        if sequence:
            batch, frames = audio.shape[:2]
            audio = audio.transpose(0, 1).reshape(frames * batch, *audio.shape[2:])
            face = face.permute(2, 0, 1, 3, 4).reshape(frames * batch, face.shape[1], *face.shape[3:])
        out = self.decode(audio, self.encode_face(face))
        if sequence:
            out = out.reshape(frames, batch, *out.shape[1:]).permute(1, 2, 0, 3, 4)
        return out

    def encode_face(self, face: torch.Tensor) -> list[torch.Tensor]:
        """(B,6,96,96) -> the face encoder's seven feature maps (96x96 down to 1x1), the decoder's skips.

        Depends on the face alone: a still image's features are computed once and reused for every frame.
        """
        skips = []
        h = face
        for stage in self.face_encoder_blocks:
            h = stage(h)
            skips.append(h)
        return skips

    def decode(self, audio: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        """(B,1,80,16) mel + `encode_face`'s skips of B faces (a still's one face `expand`ed) -> (B,3,96,96)."""
        x = self.audio_encoder(audio)
        for stage, skip in zip(self.face_decoder_blocks, reversed(skips)):
            x = torch.cat((stage(x), skip), dim=1)
        return self.output_block(x)


def _seq(*modules: nn.Module | None) -> nn.Sequential:
    """An nn.Sequential of the modules that are not None, each under its index in the full layout
    (`audio_encoder.3` stays `audio_encoder.3` when the residual blocks 1 and 2 are left out)."""
    return nn.Sequential(OrderedDict((str(i), m) for i, m in enumerate(modules) if m is not None))
