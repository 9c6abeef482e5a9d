"""Where every token sits: its group (for the attention rule), its time and its RoPE position.

Time is counted in latent frames: the history frames are 0 .. k-1, the current frame is k, the
future frames are k+1 .. k+h. Frame tokens take the position (frame, row, column) of their patch
on the latent grid; value tokens take exactly the positions of the RGB tokens they align with.

Action tokens (one per dataset step) sit *between* frames: the action taken j steps from now
(j < 0 in the past) leads to the state at step j+1, which belongs to latent frame
k + (j + 1) / actions_per_latent_frame; that fractional time is both its causal time and its RoPE
time position, and its row and column positions are 0. So the last action of the chunk shares
the time of the last predicted frame, and the last past action that of the current frame.

Tokens that belong to an instant rather than a patch (the robot state, the value-noise tokens)
take that instant's time and row and column 0 (:func:`instant_layout`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lerobot_aim.model.attention_mask import Group
from lerobot_aim.model.rope import frame_positions


@dataclass(frozen=True)
class TokenLayout:
    """groups (L,) long, times (L,) float, positions (L, 3) float of a token sequence (on the CPU)."""

    groups: torch.Tensor
    times: torch.Tensor
    positions: torch.Tensor

    def __len__(self) -> int:
        return len(self.groups)

    @staticmethod
    def cat(layouts: list[TokenLayout]) -> TokenLayout:
        return TokenLayout(
            *(torch.cat([getattr(lay, f) for lay in layouts]) for f in ("groups", "times", "positions"))
        )

    def select(self, index: torch.Tensor) -> TokenLayout:
        """The tokens at ``index`` (a (n,) long tensor), in that order."""
        return TokenLayout(self.groups[index], self.times[index], self.positions[index])

    def to(self, device) -> TokenLayout:
        return TokenLayout(self.groups.to(device), self.times.to(device), self.positions.to(device))


def frame_layout(group: Group, first_frame: int, num_frames: int, grid_hw: tuple[int, int]) -> TokenLayout:
    """Tokens of ``num_frames`` latent frames starting at ``first_frame``, frame-major."""
    positions = frame_positions(num_frames, *grid_hw, first_frame=first_frame)
    groups = torch.full((len(positions),), int(group), dtype=torch.long, device="cpu")
    return TokenLayout(groups, positions[:, 0].clone(), positions)


def observation_layout(num_frames: int, grid_hw: tuple[int, int]) -> TokenLayout:
    """History frames (PAST_OBS) then the current frame (CURRENT_OBS)."""
    past = frame_layout(Group.PAST_OBS, 0, num_frames - 1, grid_hw)
    current = frame_layout(Group.CURRENT_OBS, num_frames - 1, 1, grid_hw)
    return TokenLayout.cat([past, current])


def action_layout(
    group: Group, first_step: int, num_steps: int, current_frame: int, actions_per_latent_frame: int
) -> TokenLayout:
    """Actions at steps first_step .. first_step + num_steps - 1 relative to now (see module doc)."""
    steps = torch.arange(first_step, first_step + num_steps, dtype=torch.float32, device="cpu")
    times = current_frame + (steps + 1) / actions_per_latent_frame
    positions = torch.stack([times, torch.zeros_like(times), torch.zeros_like(times)], dim=-1)
    return TokenLayout(torch.full((num_steps,), int(group), dtype=torch.long, device="cpu"), times, positions)


def instant_layout(group: Group, time: float, num_tokens: int) -> TokenLayout:
    """``num_tokens`` tokens of one instant: the state (current frame) or the value-noise tokens."""
    times = torch.full((num_tokens,), float(time), device="cpu")
    positions = torch.stack([times, torch.zeros_like(times), torch.zeros_like(times)], dim=-1)
    return TokenLayout(torch.full((num_tokens,), int(group), dtype=torch.long, device="cpu"), times, positions)
