"""The action stream ``a``: a narrower transformer of the same depth (paper Sec. 4.3.2).

Each action is one token: a small MLP encodes it (z^a = E_a(a), Sec. 4.3.1), blocks of width
``action_width`` project their queries, keys and values into the shared attention space, and a
linear decoder D_a reads the velocity of every action back out. With ``state_dim > 0`` a second MLP
embeds the robot state as one more context token of this stream.
"""

from __future__ import annotations

from torch import nn

from lerobot_aim.model.stream_block import StreamBlock, TimeEmbedding, add_output_head


class ActionStream(nn.Module):
    def __init__(
        self,
        action_dim: int,
        dim: int,
        num_heads: int,
        head_dim: int,
        ffn_dim: int,
        num_layers: int,
        freq_dim: int,
        state_dim: int = 0,
        eps: float = 1e-6,
    ):
        super().__init__()
        self.action_encoder = nn.Sequential(nn.Linear(action_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.state_encoder = None
        if state_dim:
            self.state_encoder = nn.Sequential(nn.Linear(state_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.condition_embedder = TimeEmbedding(dim, freq_dim)
        self.blocks = nn.ModuleList(
            StreamBlock(dim, num_heads, head_dim, ffn_dim, cross_attention=False, eps=eps)
            for _ in range(num_layers)
        )
        add_output_head(self, dim, action_dim, eps)
