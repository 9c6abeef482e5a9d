"""Standardised latents: what the flow is trained on has unit scale, as the noise it starts from.

diffusers' Wan pipelines standardise the Wan2.2 VAE's latents with the VAE's own per-channel
``latents_mean`` / ``latents_std`` (:class:`~lerobot_aim.model.codecs.WanVAECodec` does it already).
The lossless pixel codec has no such statistics, and its raw latents are pixels in [-1, 1] whose
content varies far less than unit noise; :class:`LatentStandardizer` standardises them per latent
channel with the dataset's image statistics (LeRobot's ``meta/stats.json``: per-channel mean and std
of every camera in [0, 1]), once for the RGB frames and once for the value maps. Its buffers are
saved with the policy, so a loaded checkpoint standardises as it was trained.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# A channel that barely varies in the data (e.g. value maps that are blank) is not blown up.
MIN_STD = 0.05


class LatentStandardizer(nn.Module):
    """z -> (z - mean) / std per latent channel; identity until statistics are given."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(1, channels, 1, 1, 1))
        self.register_buffer("std", torch.ones(1, channels, 1, 1, 1))

    @torch.no_grad()
    def set_pixel_statistics(self, camera_stats: list[dict], patch_size: int) -> None:
        """Statistics of the pixel codec's latents from per-camera image statistics.

        Args:
            camera_stats: per camera, in T-pose order (head first), LeRobot's stats of that camera's
                frames: ``{"mean": (3, 1, 1), "std": (3, 1, 1)}`` in [0, 1].
            patch_size: the pixel codec's patch p; its latent channel ``c * p * p + i`` holds colour
                channel c (Wan's patchify order).

        The canvas pools the views by area (the head view at full size, each wrist view at a quarter
        of it) and maps [0, 1] to the codec's [-1, 1].
        """
        weights = torch.tensor([1.0] + [0.25] * (len(camera_stats) - 1), dtype=torch.float64)
        means = torch.stack([torch.as_tensor(s["mean"], dtype=torch.float64).reshape(3) for s in camera_stats])
        stds = torch.stack([torch.as_tensor(s["std"], dtype=torch.float64).reshape(3) for s in camera_stats])
        if len(camera_stats) == 2:  # the canvas's empty wrist slot is black
            weights = torch.cat([weights, torch.tensor([0.25], dtype=torch.float64)])
            means, stds = torch.cat([means, means.new_zeros(1, 3)]), torch.cat([stds, stds.new_zeros(1, 3)])
        weights = (weights / weights.sum())[:, None]
        mean = (weights * means).sum(0)
        var = (weights * (stds**2 + means**2)).sum(0) - mean**2
        mean, std = 2 * mean - 1, 2 * var.clamp(min=0).sqrt()
        per_channel = lambda x: x.repeat_interleave(patch_size * patch_size)  # noqa: E731
        self.mean.copy_(per_channel(mean).view_as(self.mean))
        self.std.copy_(per_channel(std).clamp(min=MIN_STD).view_as(self.std))

    def normalize(self, latents: Tensor) -> Tensor:
        """(B, C, T, H, W) codec latents -> standardised latents."""
        return (latents - self.mean.to(latents)) / self.std.to(latents)

    def denormalize(self, latents: Tensor) -> Tensor:
        """Standardised latents -> codec latents."""
        return latents * self.std.to(latents) + self.mean.to(latents)
