"""AIMConfig: every knob of the AIM policy, registered with LeRobot as ``--policy.type=aim``.

Time in AIM is counted in *latent frames*. The codec turns ``1 + temporal_stride * n`` pixel frames,
taken every ``frame_stride`` dataset steps, into ``1 + n`` latent frames. The model sees
``history_frames`` past latent frames plus the current one (the clean context) and predicts
``future_frames`` latent frames of RGB and of value maps, together with one action per dataset step
over the same span (``chunk_size = future_frames * actions_per_latent_frame``).

The dataclass defaults are the paper's model (Wan2.2-TI2V-5B streams, three views, bf16). The
presets under ``configs/`` (``aim_wan22_5b``, ``aim_tiny``) are train-config files that
``lerobot-train --config_path=...`` accepts and that :func:`load_preset` turns into an AIMConfig.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

from lerobot.configs import NormalizationMode, PreTrainedConfig
from lerobot.optim import AdamWConfig, CosineDecayWithWarmupSchedulerConfig
from lerobot.utils.constants import OBS_STATE

from lerobot_aim.cli import InputError
from lerobot_aim.data.schema import IMAGES_PREFIX, image_key, value_map_key

ATTENTION_MODES = ("intent_causal", "wam", "no_value")
CONTEXT_ATTENTIONS = ("causal", "per_instant")
CODECS = {"pixel": 1, "wan_vae": 4}  # codec name -> temporal stride
WAN22_LATENT_CHANNELS = 48  # z_dim of the Wan2.2 VAE
TEXT_ENCODER_DIMS = {"minilm": 384, "umt5": 4096}
ATTENTION_BACKENDS = ("auto", "sdpa", "flex")
DTYPES = ("float32", "bfloat16")


PRESETS_DIR = Path(__file__).parent / "configs"


class AIMConfigError(InputError):
    """A field of AIMConfig that cannot work, with what to set instead (an :class:`InputError`, not a
    ValueError, so that ``lerobot-train``'s parser shows the message)."""


@PreTrainedConfig.register_subclass("aim")
@dataclass
class AIMConfig(PreTrainedConfig):
    """Configuration of AIM (intent-aware unified world-action model, arXiv 2604.11135).

    Streams share one attention space of ``num_attention_heads x attention_head_dim``; the RGB and
    value streams are that wide (as Wan2.2 is), the action stream is ``action_width`` wide and
    projects into it.
    """

    # Inputs

    # Camera names in T-pose order: the first is the head view (top, full size), up to two wrist
    # views follow (bottom, half size). Images come from `observation.images.<cam>`, value maps from
    # `observation.value_maps.<cam>`. Empty: taken from the dataset (head = the dataset's head camera).
    cameras: list[str] = field(default_factory=list)
    # (height, width) every head view is resized to; wrist views are resized to half of it.
    image_size: tuple[int, int] = (256, 320)

    # Time

    # Past latent frames in the context, besides the current one (k in the paper).
    history_frames: int = 1
    # Future latent frames of RGB and value maps to predict (h in the paper).
    future_frames: int = 2
    # Dataset steps between two pixel frames the codec sees.
    frame_stride: int = 1
    # Actions executed from each predicted chunk before planning again (<= chunk_size).
    n_action_steps: int = 8

    # Codec and text

    # Latent codec: "wan_vae" (the frozen Wan2.2 VAE, 16x spatial, 4x temporal) or "pixel" (lossless
    # space-to-depth, for tiny CPU configs).
    codec: str = "wan_vae"
    # Folder or Hub id of the Wan2.2 VAE (diffusers layout, `vae/` subfolder allowed).
    codec_path: str | None = "Wan-AI/Wan2.2-TI2V-5B-Diffusers"
    # Patch size of the pixel codec (latent channels = 3 * p * p).
    pixel_patch_size: int = 4
    # Frozen text encoder: "umt5" (the paper's UMT5-XXL) or "minilm" (all-MiniLM-L6-v2, offline).
    text_encoder: str = "umt5"
    # Folder or Hub id of the text encoder; None uses the encoder's default location.
    text_encoder_path: str | None = "Wan-AI/Wan2.2-TI2V-5B-Diffusers"
    # Instruction tokens kept (padded / truncated).
    text_max_length: int = 512
    # Device of the frozen text encoder ("cpu" keeps UMT5-XXL's 11 GB off a small GPU: an instruction is
    # encoded once and cached); None: the policy's device.
    text_encoder_device: str | None = None

    # Streams (Mixture-of-Transformers)

    # Folder or Hub id of a diffusers WanTransformer3DModel that initialises the RGB stream (and the
    # value stream, as a copy). None: random initialisation.
    wan_path: str | None = "Wan-AI/Wan2.2-TI2V-5B-Diffusers"
    # Blocks per stream (all three streams have the same depth).
    num_layers: int = 30
    # Heads of the shared attention space.
    num_attention_heads: int = 24
    # Width of each head of the shared attention space.
    attention_head_dim: int = 128
    # Feed-forward width of the RGB and value streams.
    ffn_dim: int = 14336
    # Transformer patch (t, h, w) over latent frames.
    patch_size: tuple[int, int, int] = (1, 2, 2)
    # Sinusoidal timestep embedding width.
    freq_dim: int = 256
    # Hidden width of the action stream (narrower than the RGB stream).
    action_width: int = 1024
    # Feed-forward width of the action stream.
    action_ffn_dim: int = 4096
    # Let the value stream use the RGB stream's blocks instead of its own copy (saves memory).
    share_value_weights: bool = False
    # Learned value-noise tokens n^m appended to the value stream's input (paper Sec. 4.3.2: the value
    # stream reads [z^m, n^m]). They take part in attention like value tokens and are not decoded.
    num_value_noise_tokens: int = 1
    # Read `observation.state` (normalised with the dataset statistics) as one context token of the
    # action stream that every stream may read, as ACT, pi0 and SmolVLA do. False: the paper's context
    # (frames, past actions and the instruction only).
    use_state: bool = False
    # Embed the context tokens of the action stream (past actions, state) with a frozen copy of the
    # action stream. `lerobot-aim-grpo` sets it: the RGB and value streams read those tokens, so without
    # the copy Stage II would move the predictions it must keep frozen.
    context_action_stream: bool = False
    # Who reads whom: "intent_causal" (the paper: actions read the future only through value maps),
    # "wam" (actions also read future RGB), "no_value" (no value stream: video + action baseline).
    attention_mode: str = "intent_causal"
    # What the context tokens read among themselves: "causal" (the paper: every context token not later
    # than itself) or "per_instant" (a frame reads only its own tokens; a past action, the state, only
    # itself). With "per_instant" a token's keys and values do not depend on the rest of the window, so
    # acting keeps them across control steps and encodes only the new frames and actions (paper
    # Sec. 4.4 step 7); this needs a codec whose latent frames are single frames (the pixel codec).
    # Train and act with the same setting.
    context_attention: str = "causal"
    # Attention kernel: "sdpa" (dense boolean mask), "flex" (FlexAttention block mask, GPU), "auto".
    attention_backend: str = "auto"

    # Flow matching

    # Loss weight of the value-map term (lambda_m in L = L_rgb + lambda_m L_map + lambda_a L_act).
    lambda_map: float = 1.0
    # Loss weight of the action term (lambda_a).
    lambda_act: float = 1.0
    # Noise shift of the RGB/value noise level in training (sigma' = s*sigma / (1 + (s-1)*sigma)).
    video_train_shift: float = 5.0
    # Noise shift of the action noise level in training.
    action_train_shift: float = 1.0
    # Noise shift of the RGB/value schedule at inference.
    video_infer_shift: float = 5.0
    # Noise shift of the action schedule at inference.
    action_infer_shift: float = 1.0
    # Denoising steps of the actions per chunk.
    num_inference_steps: int = 10
    # Denoising steps of the future RGB frames and value maps per chunk (<= num_inference_steps; None:
    # the same). After them the video is final, cached like the context, and only the action tokens
    # run the remaining steps.
    num_video_inference_steps: int | None = None
    # Reuse the context's keys and values at every denoising step (exact: the context never reads
    # the future).
    use_context_cache: bool = True
    # Let lerobot-eval write videos of the imagined future: RGB frames beside the value maps.
    save_predicted_video: bool = False

    # Compute

    # Recompute each block in the backward pass to save activation memory.
    gradient_checkpointing: bool = False
    # Compute dtype ("bfloat16" or "float32"): lerobot-train autocasts in it, the frozen codec and text
    # encoder are held in it, and so are the trainable streams unless weights_dtype says otherwise.
    dtype: str = "bfloat16"
    # Dtype of the trainable streams' weights (None: `dtype`; norms and modulation stay fp32).
    # "float32" with dtype "bfloat16" keeps fp32 master weights and computes under bf16 autocast: pure
    # bf16 weights round most AdamW updates away at small learning rates (benchmarks/results/memory_*).
    weights_dtype: str | None = None

    # Memory

    # Freeze the RGB stream (Wan2.2's weights as loaded): Stage I trains the value and action streams
    # only, so the RGB stream keeps no gradients and no optimizer state (see benchmarks/memory.py).
    freeze_rgb_stream: bool = False

    # Optimisation

    optimizer_lr: float = 1e-5
    optimizer_betas: tuple[float, float] = (0.9, 0.95)
    optimizer_eps: float = 1e-8
    optimizer_weight_decay: float = 1e-2
    optimizer_grad_clip_norm: float = 1.0
    scheduler_warmup_steps: int = 500
    scheduler_decay_steps: int = 30_000
    scheduler_decay_lr: float = 1e-6

    normalization_mapping: dict[str, NormalizationMode] = field(
        default_factory=lambda: {
            "VISUAL": NormalizationMode.IDENTITY,
            "STATE": NormalizationMode.MEAN_STD,
            "ACTION": NormalizationMode.MEAN_STD,
        }
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.image_size = tuple(self.image_size)
        self.patch_size = tuple(self.patch_size)
        self.optimizer_betas = tuple(self.optimizer_betas)
        self.cameras = list(self.cameras)
        self._check_choice("attention_mode", ATTENTION_MODES)
        self._check_choice("context_attention", CONTEXT_ATTENTIONS)
        self._check_choice("codec", tuple(CODECS))
        self._check_choice("text_encoder", tuple(TEXT_ENCODER_DIMS))
        self._check_choice("attention_backend", ATTENTION_BACKENDS)
        self._check_choice("dtype", DTYPES)
        if self.weights_dtype is not None:
            self._check_choice("weights_dtype", DTYPES)
        for name in ("history_frames", "num_value_noise_tokens"):
            if getattr(self, name) < 0:
                raise AIMConfigError(f"`{name}` must be >= 0, got {getattr(self, name)}.")
        for name in ("future_frames", "frame_stride", "n_action_steps", "num_layers", "num_inference_steps"):
            if getattr(self, name) < 1:
                raise AIMConfigError(f"`{name}` must be >= 1, got {getattr(self, name)}.")
        if not 1 <= self.video_inference_steps <= self.num_inference_steps:
            raise AIMConfigError(
                f"`num_video_inference_steps` ({self.num_video_inference_steps}) must be in [1, "
                f"num_inference_steps = {self.num_inference_steps}]: the video is final before the actions are."
            )
        if self.context_attention == "per_instant" and self.codec_temporal_stride != 1:
            raise AIMConfigError(
                f"`context_attention='per_instant'` keeps each frame's keys and values across control steps, "
                f"which needs latent frames that are single frames; the {self.codec} codec packs "
                f"{self.codec_temporal_stride} frames per latent frame causally from the start of the clip, so "
                "nothing could be reused. Keep --policy.context_attention=causal or use --policy.codec=pixel."
            )
        if self.n_action_steps > self.chunk_size:
            raise AIMConfigError(
                f"`n_action_steps` ({self.n_action_steps}) cannot exceed the predicted chunk "
                f"(future_frames * actions_per_latent_frame = {self.chunk_size}): lower n_action_steps "
                "or raise future_frames / frame_stride."
            )
        if len(self.cameras) > 3:
            raise AIMConfigError(f"`cameras` holds at most 3 views (head + two wrists), got {self.cameras}.")
        if self.attention_head_dim % 2 or self.attention_head_dim < 6:
            raise AIMConfigError(
                f"`attention_head_dim` ({self.attention_head_dim}) must be even and >= 6: 3D RoPE splits "
                "it into time, height and width pairs."
            )
        if not 0 < self.action_width <= self.hidden_size:
            raise AIMConfigError(
                f"`action_width` ({self.action_width}) must be in (0, {self.hidden_size}]: the action stream is "
                f"the narrow one, projecting its q/k/v into the shared attention space "
                f"({self.num_attention_heads} x {self.attention_head_dim} = {self.hidden_size}). Lower "
                "--policy.action_width or widen the attention space."
            )
        if self.patch_size[0] != 1:
            raise AIMConfigError(
                f"`patch_size[0]` must be 1 (one token row per latent frame), got {self.patch_size}."
            )
        self.check_image_size(self.image_size)
        self._check_token_width()

    def _check_token_width(self) -> None:
        """A stream must be at least as wide as the token it embeds and decodes: the patch embedding
        and the output projection are linear maps through the stream's width, so a narrower stream
        cannot predict some directions of the velocity, and the sampler keeps the initial noise there."""
        token = self.latent_channels * math.prod(self.patch_size)
        if token > self.hidden_size:
            raise AIMConfigError(
                f"A video token holds latent_channels x patch volume = {self.latent_channels} x "
                f"{math.prod(self.patch_size)} = {token} numbers, more than the streams' width "
                f"num_attention_heads x attention_head_dim = {self.num_attention_heads} x "
                f"{self.attention_head_dim} = {self.hidden_size}: the model could not represent part of "
                "every frame. Raise --policy.num_attention_heads or --policy.attention_head_dim, or "
                "shrink --policy.patch_size (or --policy.pixel_patch_size for the pixel codec)."
            )

    def _check_choice(self, name: str, allowed: tuple[str, ...]) -> None:
        if getattr(self, name) not in allowed:
            raise AIMConfigError(f"Unknown `{name}` {getattr(self, name)!r}: choose one of {', '.join(allowed)}.")

    # Derived sizes

    @property
    def codec_temporal_stride(self) -> int:
        return CODECS[self.codec]

    @property
    def codec_spatial_stride(self) -> int:
        return self.pixel_patch_size if self.codec == "pixel" else 16

    @property
    def latent_channels(self) -> int:
        """Channels of the codec's latents: 3 p^2 for the pixel codec, 48 for the Wan2.2 VAE."""
        return 3 * self.pixel_patch_size**2 if self.codec == "pixel" else WAN22_LATENT_CHANNELS

    @property
    def video_inference_steps(self) -> int:
        """Denoising steps of x and m per chunk."""
        steps = self.num_video_inference_steps
        return self.num_inference_steps if steps is None else steps

    @property
    def reuses_context_across_steps(self) -> bool:
        """Whether acting keeps the context's keys and values from one chunk to the next."""
        return self.use_context_cache and self.context_attention == "per_instant"

    @property
    def actions_per_latent_frame(self) -> int:
        """Dataset steps (one action each) covered by one latent frame: codec stride x frame stride."""
        return self.codec_temporal_stride * self.frame_stride

    @property
    def chunk_size(self) -> int:
        """Actions predicted per chunk (one per dataset step over the future latent frames)."""
        return self.future_frames * self.actions_per_latent_frame

    @property
    def num_past_actions(self) -> int:
        """Past actions in the context: those between the first history frame and now."""
        return self.history_frames * self.actions_per_latent_frame

    @property
    def hidden_size(self) -> int:
        """Width of the RGB and value streams = the shared attention space."""
        return self.num_attention_heads * self.attention_head_dim

    @property
    def text_dim(self) -> int:
        return TEXT_ENCODER_DIMS[self.text_encoder]

    def check_image_size(self, image_size: tuple[int, int]) -> None:
        """Head views, and wrist views at half size, must tile into whole transformer patches."""
        multiple = 2 * self.codec_spatial_stride * max(self.patch_size[1:])
        if image_size[0] % multiple or image_size[1] % multiple:
            raise AIMConfigError(
                f"`image_size` {tuple(image_size)} cannot be encoded: with codec {self.codec!r} (stride "
                f"{self.codec_spatial_stride}), patch {self.patch_size[1:]} and half-size wrist views, height "
                f"and width must be multiples of {multiple}. Set --policy.image_size to e.g. "
                f"[{max(multiple, round(image_size[0] / multiple) * multiple)}, "
                f"{max(multiple, round(image_size[1] / multiple) * multiple)}]."
            )

    # LeRobot hooks

    @property
    def observation_delta_indices(self) -> list[int]:
        """Pixel frames: history and current, then the future, every `frame_stride` steps."""
        step = self.frame_stride
        first = -self.history_frames * self.actions_per_latent_frame
        last = self.future_frames * self.actions_per_latent_frame
        return list(range(first, last + 1, step))

    @property
    def action_delta_indices(self) -> list[int]:
        """Past actions (context) then the future chunk, one per dataset step."""
        return list(range(-self.num_past_actions, self.chunk_size))

    @property
    def reward_delta_indices(self) -> None:
        return None

    def set_dataset_feature_metadata(self, dataset_features: dict) -> None:
        """Pick the cameras from the dataset when none were configured (LeRobot calls this)."""
        if not self.cameras:
            cams = [k.removeprefix(IMAGES_PREFIX) for k in dataset_features if k.startswith(IMAGES_PREFIX)]
            self.cameras = cams[:3]
        self.validate_features()

    def validate_features(self) -> None:
        if self.input_features:
            images = {
                k.removeprefix(IMAGES_PREFIX) for k in self.input_features if k.startswith(IMAGES_PREFIX)
            }
            if not self.cameras:
                self.cameras = sorted(images)[:3]
            missing = [cam for cam in self.cameras if cam not in images]
            if missing:
                raise ValueError(
                    f"Camera(s) {missing} of `--policy.cameras` are not among the inputs "
                    f"{sorted(images)}: list cameras that the dataset or env provides, or rename them with "
                    "--rename_map."
                )
        if not self.cameras and self.input_features:
            raise ValueError("AIM needs at least one camera (`observation.images.<cam>`) among its inputs.")
        if self.output_features and (self.action_feature is None or len(self.action_feature.shape) != 1):
            raise ValueError("AIM needs a 1-D `action` output feature.")
        if self.use_state and self.input_features:
            state = self.input_features.get(OBS_STATE)
            if state is None or len(state.shape) != 1:
                raise ValueError(
                    f"--policy.use_state=true reads a 1-D `{OBS_STATE}`, but the inputs are "
                    f"{sorted(self.input_features)}: record the robot state, or set --policy.use_state=false."
                )

    @property
    def state_dim(self) -> int:
        """Size of `observation.state` when AIM reads it (``use_state``), else 0."""
        return self.input_features[OBS_STATE].shape[0] if self.use_state else 0

    @property
    def image_keys(self) -> list[str]:
        return [image_key(cam) for cam in self.cameras]

    @property
    def value_map_keys(self) -> list[str]:
        return [value_map_key(cam) for cam in self.cameras]

    @property
    def action_dim(self) -> int:
        return self.action_feature.shape[0]

    def get_optimizer_preset(self) -> AdamWConfig:
        return AdamWConfig(
            lr=self.optimizer_lr,
            betas=self.optimizer_betas,
            eps=self.optimizer_eps,
            weight_decay=self.optimizer_weight_decay,
            grad_clip_norm=self.optimizer_grad_clip_norm,
        )

    def get_scheduler_preset(self) -> CosineDecayWithWarmupSchedulerConfig:
        return CosineDecayWithWarmupSchedulerConfig(
            peak_lr=self.optimizer_lr,
            decay_lr=self.scheduler_decay_lr,
            num_warmup_steps=self.scheduler_warmup_steps,
            num_decay_steps=self.scheduler_decay_steps,
        )


def preset_path(name: str) -> Path:
    """The train-config file of a preset (``aim_tiny``, ``aim_wan22_5b``, ...)."""
    path = PRESETS_DIR / f"{name.removesuffix('.json')}.json"
    if not path.is_file():
        known = sorted(p.stem for p in PRESETS_DIR.glob("*.json"))
        raise ValueError(f"Unknown AIM preset {name!r}: choose one of {', '.join(known)}.")
    return path


def load_preset(name: str, **overrides) -> AIMConfig:
    """AIMConfig of a preset's ``policy`` section, with keyword overrides."""
    policy = json.loads(preset_path(name).read_text())["policy"]
    if policy.pop("type", "aim") != "aim":
        raise ValueError(f"Preset {name!r} is not an AIM policy config.")
    known = {f.name for f in fields(AIMConfig)}
    unknown = sorted(set(policy) - known)
    if unknown:
        raise ValueError(f"Preset {name!r} sets unknown AIMConfig fields {unknown}.")
    return AIMConfig(**{**policy, **overrides})
