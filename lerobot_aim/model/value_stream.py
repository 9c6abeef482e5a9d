"""The value-map stream ``m``: Wan2.2's blocks without language, over value-map latents.

Value maps are packed and encoded like the RGB frames (same T-pose canvas, same frozen codec), so
value tokens align pixel for pixel with RGB tokens and share their positions. The stream starts as
a copy of the RGB stream (:meth:`copy_from_rgb`) or uses the RGB stream's blocks outright
(``share_value_weights``); either way it keeps its own patch embedding, time modulation and output
head, and the learned value-noise tokens n^m (paper Sec. 4.3.2: the value stream's input is
[z^m, n^m]). This project reads n^m as tokens appended to the value-map tokens, not as a vector
added to each of them: an added constant is what the patch embedding's bias already is, so it could
not change what the model expresses, while extra tokens are read by the value and action tokens and
carry what the stream learns to put there.
"""

from __future__ import annotations

import torch
from torch import nn

from lerobot_aim.model.stream_block import StreamBlock, TimeEmbedding, add_output_head
from lerobot_aim.model.wan_stream import WanRGBStream


class ValueStream(nn.Module):
    def __init__(
        self,
        dim: int,
        num_heads: int,
        head_dim: int,
        ffn_dim: int,
        num_layers: int,
        latent_channels: int,
        patch_size: tuple[int, int, int],
        freq_dim: int,
        num_noise_tokens: int = 1,
        shared_blocks: bool = False,
        eps: float = 1e-6,
    ):
        super().__init__()
        patch_dim = latent_channels * patch_size[0] * patch_size[1] * patch_size[2]
        self.patch_embedding = nn.Conv3d(latent_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.value_noise_tokens = nn.Parameter(torch.randn(1, num_noise_tokens, dim) * 0.02)
        self.condition_embedder = TimeEmbedding(dim, freq_dim)
        self.blocks = None
        if not shared_blocks:
            self.blocks = nn.ModuleList(
                StreamBlock(dim, num_heads, head_dim, ffn_dim, cross_attention=False, eps=eps)
                for _ in range(num_layers)
            )
        add_output_head(self, dim, patch_dim, eps)

    @torch.no_grad()
    def copy_from_rgb(self, rgb: WanRGBStream) -> None:
        """Initialise every module the two streams have in common from the RGB stream (paper: the
        value branch starts from Wan2.2). Language modules (attn2, norm2, text_embedder) are skipped."""
        own = self.state_dict()
        shared = {k: v for k, v in rgb.state_dict().items() if k in own and own[k].shape == v.shape}
        self.load_state_dict(shared, strict=False)
