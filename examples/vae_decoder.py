"""Diffusers AutoencoderKL decoder example for codesign (random weights, small config).

Contains group norm, conv2d, nearest upsampling and the mid-block self-attention.
"""
import torch
from torch import nn
from diffusers import AutoencoderKL


class VAEDecode(nn.Module):
    """forward(z) -> vae.decode(z).sample (post_quant_conv + decoder)."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, z):
        return self.vae.decode(z).sample


def tiny():
    """AutoencoderKL with block_out_channels (32, 64), layers_per_block 1, latent 4, norm_num_groups 8;
    decoder only; latent z of shape (1, 4, 8, 8) -> image (1, 3, 16, 16)."""
    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(32, 64), layers_per_block=1, latent_channels=4,
        norm_num_groups=8, sample_size=16,
    )
    model = VAEDecode(vae).eval()
    z = torch.randn(1, 4, 8, 8)
    return model, (z,)


if __name__ == "__main__":
    m, inp = tiny()
    with torch.no_grad():
        print(tuple(m(*inp).shape))
