"""3D rotary position embedding over (time, height, width), as Wan2.2 applies it.

Wan2.2 splits each head's dimension into a time, a height and a width part (h = w = 2 * (d // 6),
t = the rest) and rotates interleaved pairs with theta = 10000. diffusers precomputes a table for
integer latent-grid positions; here angles are computed from arbitrary (possibly fractional)
positions, which gives the same numbers on the grid and lets action tokens sit between frames.
"""

from __future__ import annotations

import torch


def rope_axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Head-dimension share of the (time, height, width) axes, as in diffusers' WanRotaryPosEmbed."""
    hw = 2 * (head_dim // 6)
    return head_dim - 2 * hw, hw, hw


def rope_cos_sin(
    positions: torch.Tensor, head_dim: int, theta: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotation of every token.

    Args:
        positions: (L, 3) or (B, L, 3) (time, height, width) positions, in latent-grid units.
    Returns:
        cos, sin: (1 or B, L, 1, head_dim) float32, each angle repeated for its interleaved pair.
    """
    if positions.ndim == 2:
        positions = positions.unsqueeze(0)
    angles = []
    for axis, dim in enumerate(rope_axis_dims(head_dim)):
        inv_freq = 1.0 / (
            theta ** (torch.arange(0, dim, 2, dtype=torch.float64, device=positions.device) / dim)
        )
        angles.append(positions[..., axis : axis + 1].to(torch.float64) * inv_freq)
    angles = torch.cat(angles, dim=-1).repeat_interleave(2, dim=-1)
    return angles.cos().float().unsqueeze(2), angles.sin().float().unsqueeze(2)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of ``x`` (B, L, heads, head_dim) by the angles in cos/sin."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos[..., 0::2], sin[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2).type_as(x)


def frame_positions(num_frames: int, height: int, width: int, first_frame: int = 0) -> torch.Tensor:
    """(num_frames * height * width, 3) positions (CPU) of a latent token grid, frame-major like Wan's flatten."""
    t = torch.arange(first_frame, first_frame + num_frames, device="cpu")
    rows, cols = torch.arange(height, device="cpu"), torch.arange(width, device="cpu")
    grid = torch.stack(torch.meshgrid(t, rows, cols, indexing="ij"), dim=-1)
    return grid.reshape(-1, 3).float()
