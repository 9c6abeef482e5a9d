"""Frozen latent codecs: videos in [-1, 1] to latent grids and back, behind one interface.

`WanVAECodec` wraps the Wan2.2 VAE (the paper model); `PixelPatchCodec` is a lossless space-to-depth
codec without parameters that makes CPU-sized configs possible. RGB frames and value maps go through
the same codec.
"""

import os

import torch
from diffusers import AutoencoderKLWan
from diffusers.models.autoencoders.autoencoder_kl_wan import patchify, unpatchify
from torch import Tensor, nn

from lerobot_aim.model.sources import resolve_component

CODEC_KINDS = ("pixel", "wan_vae")


class LatentCodec(nn.Module):
    """Frozen video codec (B, 3, T, H, W) in [-1, 1] <-> (B, C, T', H', W').

    T' = 1 + (T - 1) // temporal_stride (the first frame alone, then chunks of `temporal_stride`),
    H' = H // spatial_stride, W' = W // spatial_stride. The codec stays in eval mode with frozen
    parameters; running it under `torch.no_grad()` is the caller's business.
    """

    name: str
    latent_channels: int
    spatial_stride: int
    temporal_stride: int

    def train(self, mode: bool = True) -> "LatentCodec":
        """Keeps the codec in eval mode whatever `mode` says."""
        return super().train(False)

    def _freeze(self) -> None:
        self.requires_grad_(False)
        self.eval()

    def check_image_size(self, height: int, width: int) -> None:
        """Raises ValueError unless height and width are multiples of `spatial_stride`."""
        s = self.spatial_stride
        if height % s == 0 and width % s == 0:
            return
        suggested_h, suggested_w = (max(s, (x + s // 2) // s * s) for x in (height, width))
        raise ValueError(
            f"Image size {height}x{width} (height x width) does not fit the {self.name!r} codec: both sides "
            f"must be multiples of {s}, its spatial stride. Resize the images (--policy.image_size) to e.g. {suggested_h}x{suggested_w}."
        )

    def check_num_frames(self, num_frames: int) -> None:
        """Raises ValueError unless num_frames = 1 + temporal_stride * k with k >= 0."""
        s = self.temporal_stride
        if num_frames >= 1 and (num_frames - 1) % s == 0:
            return
        suggested = 1 + max(0, (num_frames - 1 + s // 2) // s * s)
        raise ValueError(
            f"Got {num_frames} frames, but the {self.name!r} codec encodes 1 + {s}k frames "
            f"({', '.join(str(1 + s * k) for k in range(3))}, ...): the first frame alone, then chunks of {s}. "
            f"Use e.g. {suggested} frames (--policy.history_frames / future_frames)."
        )

    def latent_size(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        """(T', H', W') of the latent grid of a (T, H, W) video; raises ValueError on sizes the codec can't take."""
        self.check_num_frames(num_frames)
        self.check_image_size(height, width)
        return (
            1 + (num_frames - 1) // self.temporal_stride,
            height // self.spatial_stride,
            width // self.spatial_stride,
        )

    def encode(self, video: Tensor) -> Tensor:
        """(B, 3, T, H, W) in [-1, 1] -> latents (B, latent_channels, T', H', W'), in the video's dtype."""
        _, _, num_frames, height, width = video.shape
        self.latent_size(num_frames, height, width)
        return self._encode(video)

    def decode(self, latents: Tensor) -> Tensor:
        """(B, latent_channels, T', H', W') -> video (B, 3, T, H, W) in [-1, 1], in the latents' dtype."""
        return self._decode(latents)

    def _encode(self, video: Tensor) -> Tensor:
        raise NotImplementedError

    def _decode(self, latents: Tensor) -> Tensor:
        raise NotImplementedError


class PixelPatchCodec(LatentCodec):
    """Lossless space-to-depth: each p x p patch of a frame becomes 3 * p * p channels; no parameters.

    Uses the Wan VAE's own patchify, so the channel order is the one Wan2.2 feeds its encoder.
    """

    name = "pixel"
    temporal_stride = 1

    def __init__(self, patch_size: int):
        super().__init__()
        if patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {patch_size}.")
        self.spatial_stride = patch_size
        self.latent_channels = 3 * patch_size * patch_size
        self._freeze()

    def _encode(self, video: Tensor) -> Tensor:
        return patchify(video, self.spatial_stride)

    def _decode(self, latents: Tensor) -> Tensor:
        return unpatchify(latents, self.spatial_stride).clamp(-1.0, 1.0)


class WanVAECodec(LatentCodec):
    """The Wan2.2 VAE (`diffusers.AutoencoderKLWan`), normalised as diffusers' Wan pipelines do.

    encode takes the posterior mean (`sample_mode="argmax"` in the pipelines) and returns
    (mean - latents_mean) / latents_std; decode undoes it before the VAE decoder.
    """

    name = "wan_vae"

    def __init__(self, vae: AutoencoderKLWan):
        super().__init__()
        self.vae = vae
        config = vae.config
        self.latent_channels = config.z_dim
        self.spatial_stride = config.scale_factor_spatial
        self.temporal_stride = config.scale_factor_temporal
        # Non-persistent: they come from the VAE config, not from the policy's state dict.
        shape = (1, config.z_dim, 1, 1, 1)
        self.register_buffer("latents_mean", torch.tensor(config.latents_mean).view(shape), persistent=False)
        self.register_buffer("latents_std", torch.tensor(config.latents_std).view(shape), persistent=False)
        self._freeze()

    @classmethod
    def from_pretrained(
        cls, path_or_repo_id: str | os.PathLike, torch_dtype: torch.dtype = torch.float32
    ) -> "WanVAECodec":
        """Loads an AutoencoderKLWan through diffusers from its folder, a Wan pipeline folder with a
        ``vae/`` subfolder, or a Hub id (:func:`~lerobot_aim.model.sources.resolve_component`)."""
        source, subfolder = resolve_component(
            path_or_repo_id, "vae", "Wan2.2 VAE (AutoencoderKLWan)", "--policy.codec_path"
        )
        return cls(AutoencoderKLWan.from_pretrained(source, subfolder=subfolder, torch_dtype=torch_dtype))

    def _encode(self, video: Tensor) -> Tensor:
        mean = self.vae.encode(video.to(self.vae.dtype)).latent_dist.mode()
        latents = (mean - self.latents_mean.to(mean.dtype)) / self.latents_std.to(mean.dtype)
        return latents.to(video.dtype)

    def _decode(self, latents: Tensor) -> Tensor:
        z = latents.to(self.vae.dtype)
        z = z * self.latents_std.to(z.dtype) + self.latents_mean.to(z.dtype)
        return self.vae.decode(z).sample.to(latents.dtype)


def make_codec(
    kind: str, path: str | None, patch_size: int, torch_dtype: torch.dtype = torch.float32
) -> LatentCodec:
    """Builds the codec named by `kind` ("pixel": PixelPatchCodec(patch_size); "wan_vae": WanVAECodec at `path`)."""
    if kind == "pixel":
        return PixelPatchCodec(patch_size)
    if kind == "wan_vae":
        if path is None:
            raise ValueError(
                "The 'wan_vae' codec needs a path: a local folder or Hub id holding the Wan2.2 VAE, "
                "e.g. 'Wan-AI/Wan2.2-TI2V-5B-Diffusers'."
            )
        return WanVAECodec.from_pretrained(path, torch_dtype=torch_dtype)
    raise ValueError(f"Unknown codec kind {kind!r}; allowed: {', '.join(repr(k) for k in CODEC_KINDS)}.")
