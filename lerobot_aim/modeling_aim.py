"""AIMPolicy: the LeRobot policy around the AIM network.

Training (Stage I, paper Sec. 4.3.2): L = L_rgb + lambda_m L_map + lambda_a L_act, three
flow-matching velocity losses; x and m share one noise level per sample, a has its own.

Inference (paper Sec. 4.4): the policy keeps the recent packed frames and the actions it ran; when
its action queue is empty it encodes the context (history frames, current frame, past actions,
instruction), denoises x, m and a together from Gaussian noise and queues ``n_action_steps``
actions. The predicted value-map latents of the last chunk stay in ``last_predicted_latents``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from lerobot.policies.pretrained import PreTrainedPolicy
from lerobot.utils.constants import ACTION, OBS_STATE
from torch import Tensor

from lerobot_aim.checkpoint import CheckpointError, check_local_checkpoint, check_weights
from lerobot_aim.configuration_aim import AIMConfig
from lerobot_aim.data.schema import check_value_maps
from lerobot_aim.history import ContextHistory
from lerobot_aim.model import (
    AIMTransformer,
    Context,
    ContextKVStore,
    KVCache,
    Prediction,
    WanRGBStream,
    make_codec,
    make_text_encoder,
)
from lerobot_aim.model.flow_matching import add_noise, sample_sigmas, velocity_target
from lerobot_aim.model.latent_norm import LatentStandardizer
from lerobot_aim.model.sampling import ChunkSchedule, sample_chunk
from lerobot_aim.processor_aim import OBS_RGB_CANVAS, OBS_VALUE_CANVAS

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class _Frozen:
    """Holds the frozen codec and text encoder outside the module tree: they are neither trained
    nor saved with the policy (they load from their own folders or Hub ids)."""

    def __init__(self, codec, text_encoder, text_encoder_device: str | None = None):
        self.codec, self.text_encoder = codec, text_encoder
        self.text_encoder_device = text_encoder_device

    def to(self, device) -> None:
        """The codec follows the policy; the text encoder too, unless it is pinned to another device."""
        self.codec.to(device)
        self.text_encoder.to(self.text_encoder_device or device)


class AIMPolicy(PreTrainedPolicy):
    config_class = AIMConfig
    name = "aim"
    # FSDP wrap units (LeRobot main reads this ClassVar; 0.6.1 takes them from the accelerate config's
    # `fsdp_transformer_layer_cls_to_wrap`). The MoT layer calls its blocks' pieces (`qkv`, `finish`)
    # rather than their `forward`, so a block cannot be a unit; every Linear is (FSDP's hooks run on
    # `__call__`), which shards the streams' matrices one projection at a time.
    _fsdp_wrap_modules: ClassVar[list[str]] = ["Linear"]

    def __init__(
        self,
        config: AIMConfig,
        dataset_stats: dict | None = None,
        dataset_meta=None,
        init_from_wan: bool = True,
        **kwargs,
    ):
        super().__init__(config)
        config.validate_features()
        if dataset_meta is not None and config.attention_mode != "no_value":
            check_value_maps(
                dataset_meta.features, config.cameras, source=f"dataset {dataset_meta.repo_id!r}"
            )
        dtype = DTYPES[config.dtype]
        codec = make_codec(config.codec, config.codec_path, config.pixel_patch_size, torch_dtype=dtype)
        text = make_text_encoder(
            config.text_encoder, config.text_encoder_path, config.text_max_length, torch_dtype=dtype
        )
        self._frozen = _Frozen(codec, text, config.text_encoder_device)
        if codec.latent_channels != config.latent_channels:
            raise ValueError(
                f"The codec at {config.codec_path!r} gives {codec.latent_channels} latent channels, the config "
                f"expects {config.latent_channels} ({config.codec!r}): point --policy.codec_path to a Wan2.2 VAE."
            )
        weights = self._model_dtype()
        rgb = None
        if init_from_wan and config.wan_path:
            rgb = WanRGBStream.from_diffusers(config.wan_path, torch_dtype=weights)
        self.model = AIMTransformer(
            config, config.action_dim, codec.latent_channels, rgb=rgb, state_dim=config.state_dim
        ).set_dtype(weights)
        if config.freeze_rgb_stream:
            self.model.rgb.requires_grad_(False)
        # Standardisation of the latents of RGB frames and value maps (the pixel codec's; the Wan VAE
        # codec standardises its latents itself). Saved with the policy.
        self.rgb_latent_norm = LatentStandardizer(codec.latent_channels)
        self.value_latent_norm = LatentStandardizer(codec.latent_channels)
        if config.codec == "pixel" and dataset_stats:
            self._set_latent_statistics(dataset_stats)
        self.last_prediction: Prediction | None = None
        self.last_context: Context | None = None
        self.last_predicted_latents: Tensor | None = None
        self.reset()

    @classmethod
    def from_pretrained(cls, pretrained_name_or_path, **kwargs):
        """Load a saved AIM policy; the Wan initialisation is skipped (the checkpoint has all weights).

        A local path must hold a whole checkpoint (:func:`~lerobot_aim.checkpoint.check_local_checkpoint`),
        and the weights loaded must be finite (:func:`~lerobot_aim.checkpoint.check_weights`)."""
        check_local_checkpoint(pretrained_name_or_path)
        return super().from_pretrained(pretrained_name_or_path, init_from_wan=False, **kwargs)

    @classmethod
    def _load_as_safetensor(cls, model, model_file: str, map_location: str, strict: bool):
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(model_file, framework="pt") as f:
                shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}  # noqa: SIM118
        except (SafetensorError, OSError) as error:
            raise CheckpointError(
                f"{model_file} cannot be read ({error}): the file is damaged or truncated (an interrupted "
                "download or save). Download or copy the checkpoint again, or use an earlier one."
            ) from None
        cls._check_action_size(model, model_file, shapes)
        cls._check_layout(model, model_file, shapes)
        model = super()._load_as_safetensor(model, model_file, map_location, strict)
        check_weights(model, model_file)
        return model

    @staticmethod
    def _check_action_size(model, model_file: str, shapes: dict[str, tuple[int, ...]]) -> None:
        """Refuse a checkpoint of another action size (strict=False would load it half)."""
        for key in ("model.action.action_encoder.0.weight", "model.action.proj_out.weight"):
            if key in shapes and shapes[key] != tuple(model.state_dict()[key].shape):
                raise CheckpointError(
                    f"The checkpoint {model_file} was trained with another action size ({key}: {shapes[key]}) "
                    f"than this dataset or env gives ({tuple(model.state_dict()[key].shape)}, action dim "
                    f"{model.config.action_dim}). Fine-tune from a checkpoint with the same action space, or "
                    "map the actions first."
                )

    @staticmethod
    def _check_layout(model, model_file: str, shapes: dict[str, tuple[int, ...]]) -> None:
        """Refuse a checkpoint whose tensors are not this model's: LeRobot loads with strict=False, which
        would keep random weights where the checkpoint has none."""
        own = {key: tuple(value.shape) for key, value in model.state_dict().items()}
        missing, unexpected = sorted(own.keys() - shapes.keys()), sorted(shapes.keys() - own.keys())
        other = sorted(key for key in own.keys() & shapes.keys() if own[key] != shapes[key])
        if missing or unexpected or other:
            parts = [
                f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                for what, keys in (("missing", missing), ("not in this model", unexpected), ("another shape", other))
                if keys
            ]
            raise CheckpointError(
                f"The checkpoint {model_file} does not fit this AIM model ({'; '.join(parts)}): it was saved with "
                "another config (its config.json next to it is the one to load it with) or by another version of "
                "lerobot_policy_aim. Load it with its own config, or retrain."
            )

    def _set_latent_statistics(self, dataset_stats: dict) -> None:
        """Pixel-codec latent statistics from the dataset's per-camera image statistics."""
        cfg = self.config
        for norm, keys in ((self.rgb_latent_norm, cfg.image_keys), (self.value_latent_norm, cfg.value_map_keys)):
            if all(key in dataset_stats for key in keys):
                norm.set_pixel_statistics([dataset_stats[key] for key in keys], cfg.pixel_patch_size)

    def get_optim_params(self) -> dict:
        return [p for p in self.model.parameters() if p.requires_grad]

    def _save_pretrained(self, save_directory: Path, state_dict: dict[str, Tensor] | None = None) -> None:
        """Write the config and ``model.safetensors``; both LeRobot signatures.

        LeRobot 0.6.1 passes ``state_dict``, the full state dict that lerobot-train gathers from an FSDP
        run; LeRobot main calls ``_save_pretrained(save_directory)`` and gathers sharded weights itself.
        A gathered state dict holds FSDP's fp32 master weights: each tensor is written in the dtype the
        policy itself holds it in (``config.dtype`` weights, fp32 norms, modulation and latent
        statistics, as ``set_dtype`` keeps them), so a sharded run's checkpoint has the size and the
        values a single-process one would have.
        """
        if state_dict is None:
            super()._save_pretrained(save_directory)
            return
        own = {key: value.dtype for key, value in self.state_dict().items()}
        state_dict = {key: value.to(own.get(key, value.dtype)) for key, value in state_dict.items()}
        super()._save_pretrained(save_directory, state_dict=state_dict)

    def reset(self) -> None:
        """Forget the episode: frame and action history (``self.history``), queued actions, and the
        context's keys and values kept across steps (``self.context_store``)."""
        cfg = self.config
        self.history = ContextHistory(cfg.num_past_actions, cfg.frame_stride, cfg.action_dim)
        self.context_store = ContextKVStore()
        self._queue: deque[Tensor] = deque(maxlen=cfg.n_action_steps)

    def drop_queued_actions(self) -> None:
        """Drop the queued actions (LeRobot calls this when the task changes), so that the next
        ``select_action`` plans a new chunk. The history stays: the frames seen and the actions
        executed are still the episode's past, and the new chunk is planned from them."""
        self._queue.clear()

    # ------------------------------------------------------------------------------------------
    def _device(self) -> torch.device:
        device = next(self.model.parameters()).device
        self._frozen.to(device)
        return device

    def _encode_video(self, canvas: Tensor) -> Tensor:
        """(B, T, 3, H, W) canvas in [-1, 1] -> (B, C, T', h, w) latents of the frozen codec (float32,
        not yet standardised)."""
        codec = self._frozen.codec
        with torch.no_grad():
            return codec.encode(canvas.transpose(1, 2).to(next(codec.parameters(), canvas).dtype)).float()

    def _encode_value_maps(self, obs_canvas: Tensor, value_canvas: Tensor) -> Tensor:
        """Latents (B, C, h, H, W) of the future value maps, encoded as the continuation of the
        observation frames: (B, 1 + s k, 3, H, W) context frames, then (B, s h, 3, H, W) value maps.

        A causal codec (the Wan2.2 VAE) encodes each latent frame with the frames before it, and at
        inference the context's value maps are unknown but its frames are not: encoding the value maps
        after the frames is what lets :meth:`_decode_future` decode predicted value latents after the
        same context latents, exactly the codec's inverse."""
        frames = obs_canvas.shape[1]
        latents = self._encode_video(torch.cat([obs_canvas, value_canvas], dim=1))
        return latents[:, :, 1 + (frames - 1) // self._frozen.codec.temporal_stride :]

    def _encode_text(self, batch: dict, batch_size: int) -> Tensor:
        tasks = batch.get("task")
        if tasks is None:
            tasks = [""] * batch_size
        elif isinstance(tasks, str):
            tasks = [tasks] * batch_size
        return self._frozen.text_encoder(list(tasks)).float().to(self._device())

    def _model_dtype(self) -> torch.dtype:
        """Dtype of the trainable weights (and of the network's inputs)."""
        return DTYPES[self.config.weights_dtype or self.config.dtype]

    def compute_precision(self):
        """Autocast to ``config.dtype`` when the weights are kept in another dtype (fp32 master weights,
        bf16 compute), for training and acting alike; a no-op otherwise."""
        compute = DTYPES[self.config.dtype]
        device = next(self.model.parameters()).device
        return torch.autocast(device.type, dtype=compute, enabled=compute != self._model_dtype())

    def _split_actions(self, batch: dict) -> tuple[Tensor, Tensor, Tensor]:
        """Past actions (pads zeroed, as at the start of an episode), future chunk, future mask."""
        actions = batch[ACTION]
        n_past = self.config.num_past_actions
        pad = batch.get(
            f"{ACTION}_is_pad", torch.zeros(actions.shape[:2], dtype=torch.bool, device=actions.device)
        )
        past = actions[:, :n_past].masked_fill(pad[:, :n_past, None], 0.0)
        return past, actions[:, n_past:], ~pad[:, n_past:]

    def encode_sample(self, batch: dict[str, Tensor]) -> EncodedSample:
        """A training sample (frames at ``observation_delta_indices``, actions at
        ``action_delta_indices``, packed by the AIM preprocessor) as the network sees it: the clean
        context and the clean future it must predict, with which future frames and actions lie
        within the episode."""
        cfg = self.config
        self._device()
        if OBS_RGB_CANVAS not in batch:
            raise KeyError(
                "AIMPolicy needs the AIM preprocessor's packed frames (make_aim_pre_post_processors)."
            )
        canvas = batch[OBS_RGB_CANVAS]  # (B, T, 3, H, W): context frames, then future frames
        context_frames = 1 + cfg.history_frames * self._frozen.codec.temporal_stride
        latents = self.rgb_latent_norm.normalize(self._encode_video(canvas))
        obs, future_rgb = latents[:, :, : cfg.history_frames + 1], latents[:, :, cfg.history_frames + 1 :]
        future_value = None
        if self.model.value is not None:
            if OBS_VALUE_CANVAS not in batch:
                raise KeyError(
                    "The batch has no value maps (`observation.value_maps.<cam>`): annotate the dataset with "
                    "`lerobot-aim-annotate`, or train the baseline with --policy.attention_mode=no_value."
                )
            future_value = self.value_latent_norm.normalize(
                self._encode_value_maps(canvas[:, :context_frames], batch[OBS_VALUE_CANVAS][:, context_frames:])
            )
        past_actions, future_actions, action_mask = self._split_actions(batch)
        dtype = self._model_dtype()
        context = Context(
            obs.to(dtype),
            past_actions.to(dtype),
            self._encode_text(batch, obs.shape[0]).to(dtype),
            self._current_state(batch, context_frames - 1, dtype),
        )
        return EncodedSample(
            context=context,
            future=Prediction(future_rgb, future_value, future_actions),
            frame_mask=self._future_frame_mask(batch, context_frames, future_rgb.shape[2]),
            action_mask=action_mask,
        )

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict]:
        """Stage I loss on a training batch (see :meth:`encode_sample`); returns the loss and each term
        for logging.

        L = L_rgb + lambda_m L_map + lambda_a L_act (paper Sec. 4.3.2): flow-matching velocity errors
        of the future latents and actions. Future frames and actions past the episode's end (LeRobot
        pads them with the last frame) are left out of every term."""
        cfg = self.config
        sample = self.encode_sample(batch)
        future, context, dtype = sample.future, sample.context, self._model_dtype()
        batch_size, device = future.rgb.shape[0], future.rgb.device
        video_sigma = sample_sigmas(batch_size, cfg.video_train_shift, device)
        action_sigma = sample_sigmas(batch_size, cfg.action_train_shift, device)
        noise = Prediction(
            torch.randn_like(future.rgb),
            torch.randn_like(future.value) if future.value is not None else None,
            torch.randn_like(future.actions),
        )
        noisy = Prediction(
            add_noise(future.rgb, noise.rgb, video_sigma).to(dtype),
            add_noise(future.value, noise.value, video_sigma).to(dtype) if future.value is not None else None,
            add_noise(future.actions, noise.actions, action_sigma).to(dtype),
        )
        with self.compute_precision():
            pred = self.model(context, noisy, video_sigma, action_sigma)
        loss_rgb = _masked_mean(_frame_errors(pred.rgb, velocity_target(future.rgb, noise.rgb)), sample.frame_mask)
        action_err = (pred.actions.float() - velocity_target(future.actions, noise.actions)).square().mean(-1)
        loss_act = _masked_mean(action_err, sample.action_mask)
        loss = loss_rgb + cfg.lambda_act * loss_act
        logs = {"loss_rgb": loss_rgb.item(), "loss_act": loss_act.item()}
        if future.value is not None:
            value_err = _frame_errors(pred.value, velocity_target(future.value, noise.value))
            loss_map = _masked_mean(value_err, sample.frame_mask)
            loss = loss + cfg.lambda_map * loss_map
            logs["loss_map"] = loss_map.item()
        return loss, logs

    def _future_frame_mask(self, batch: dict, context_frames: int, num_latent_frames: int) -> Tensor:
        """(B, h) bool: future latent frame j holds no frame past the episode's end (LeRobot's
        ``<image key>_is_pad`` flags of its pixel frames)."""
        pad = batch.get(f"{self.config.image_keys[0]}_is_pad")
        reference = batch[OBS_RGB_CANVAS]
        if pad is None:
            return torch.ones(reference.shape[0], num_latent_frames, dtype=torch.bool, device=reference.device)
        future = pad[:, context_frames:].reshape(pad.shape[0], num_latent_frames, -1)
        return ~future.any(-1)

    def _current_state(self, batch: dict, index: int, dtype) -> Tensor | None:
        """(B, S) normalised state of the current frame (``index`` into a training batch's frames)."""
        if not self.config.use_state:
            return None
        if OBS_STATE not in batch:
            raise KeyError(
                f"This AIM policy reads the robot state (use_state=true) but the batch has no `{OBS_STATE}`."
            )
        state = batch[OBS_STATE]
        return (state[:, index] if state.ndim == 3 else state).to(dtype)

    # ------------------------------------------------------------------------------------------
    def _context(self, batch: dict) -> tuple[Tensor, Tensor]:
        """Context latents (B, C, k+1, h, w) and past actions (B, n_past, A) at the history's current
        step, whose packed frame is ``batch``'s (:meth:`ContextHistory.context`)."""
        self.history.record_frame(batch[OBS_RGB_CANVAS])
        frames, past_actions = self.history.context()  # (B, 1 + stride*k, 3, H, W), (B, n_past, A)
        return self._encode_video(frames), past_actions

    def chunk_inputs(self, batch: dict[str, Tensor]) -> tuple[Context, Prediction]:
        """Everything one chunk is sampled from, in the model's dtype: the context (latents of the
        history and current frames (B, C, k+1, h, w), past actions (B, n_past, A), instruction
        (B, Lt, D), state) and Gaussian noise for x, m and a."""
        cfg, device, dtype = self.config, self._device(), self._model_dtype()
        obs, past_actions = self._context(batch)
        obs = self.rgb_latent_norm.normalize(obs)
        batch_size, channels, _, height, width = obs.shape
        context = Context(
            obs.to(dtype),
            past_actions.to(dtype),
            self._encode_text(batch, batch_size).to(dtype),
            self._current_state(batch, -1, dtype),
        )
        video_shape = (batch_size, channels, cfg.future_frames, height, width)
        noise = Prediction(
            torch.randn(video_shape, device=device, dtype=dtype),
            torch.randn(video_shape, device=device, dtype=dtype) if self.model.value is not None else None,
            torch.randn(batch_size, cfg.chunk_size, cfg.action_dim, device=device, dtype=dtype),
        )
        return context, noise

    def remember(self, pred: Prediction, context: Context) -> None:
        """Keep a chunk's imagined future and its context for pictures, the dense reward and
        lerobot-eval's predicted-video hook, which concatenates ``last_predicted_latents`` along time and
        decodes them once (:meth:`decode_predicted_latents`).

        ``last_predicted_latents``: (B, C or 2C, k+1+h, H, W) codec latents, per chunk the context
        frames then the imagined ones, the RGB latents first and the value-map latents (after the same
        context) in the second half of the channels."""
        self.last_prediction, self.last_context = pred, context
        obs = self.rgb_latent_norm.denormalize(context.obs_latents.float())
        parts = [torch.cat([obs, self.rgb_latent_norm.denormalize(pred.rgb.float())], dim=2)]
        if pred.value is not None:
            parts.append(torch.cat([obs, self.value_latent_norm.denormalize(pred.value.float())], dim=2))
        self.last_predicted_latents = torch.cat(parts, dim=1)

    @torch.no_grad()
    def predict_action_chunk(self, batch: dict[str, Tensor], **kwargs) -> Tensor:
        """(B, chunk_size, action_dim) normalised actions for the current observation.

        ``batch`` holds the current packed frame; the frames and actions before it come from
        ``self.history`` at its current step (``reset`` starts a new episode).
        """
        context, noise = self.chunk_inputs(batch)
        with self.compute_precision():
            pred, _ = sample_chunk(
                self.model,
                context,
                noise,
                ChunkSchedule.of(self.config),
                use_cache=self.config.use_context_cache,
                context_kv=self._context_kv(context),
            )
        self.remember(pred, context)
        return finite_actions(pred.actions.float())

    def _context_kv(self, context: Context) -> KVCache | None:
        """The context's keys and values from the cross-step store (``context_attention="per_instant"``:
        only the frames and actions new since the last chunk are run), else None (the sampler encodes
        the context)."""
        if not self.config.reuses_context_across_steps:
            return None
        frame_steps, action_steps = self.history.window_steps()
        return self.context_store.encode(self.model, context, frame_steps, action_steps)

    def next_action(self, batch: dict[str, Tensor], plan) -> tuple[Tensor, bool]:
        """Pop the next queued action, planning a chunk with ``plan(batch)`` when the queue is empty;
        returns the action and whether a chunk was planned. Every call is one env step: the history
        records its frame and the action returned, then moves to the next step."""
        self.history.record_frame(batch[OBS_RGB_CANVAS])
        planned = not self._queue
        if planned:
            self._queue.extend(plan(batch)[:, : self.config.n_action_steps].transpose(0, 1))
        action = self._queue.popleft()
        self.history.record_action(action)
        self.history.next_step()
        return action, planned

    @torch.no_grad()
    def select_action(self, batch: dict[str, Tensor], **kwargs) -> Tensor:
        """Next (B, action_dim) normalised action; plans a new chunk when the queue is empty."""
        return self.next_action(batch, self.predict_action_chunk)[0]

    def generate_model_card(self, dataset_repo_id, model_type, license, tags, cfg=None, dataset_meta=None):
        """The Hub model card, rendered from ``templates/model_card_template.md`` (architecture, data, use,
        limitations)."""
        from huggingface_hub import ModelCard, ModelCardData
        from lerobot.policies.pretrained import _build_card_context

        card_data = ModelCardData(
            license=license or "apache-2.0",
            library_name="lerobot",
            pipeline_tag="robotics",
            tags=sorted(set(tags or []) | {"robotics", "lerobot", "aim", "world-action-model"}),
            model_name=model_type,
            datasets=dataset_repo_id,
        )
        context = _build_card_context(
            cfg, dataset_meta, self.config.input_features, self.config.output_features
        )
        aim = {f: getattr(self.config, f) for f in vars(self.config) if not f.startswith("_")}
        aim.update(
            chunk_size=self.config.chunk_size, num_parameters=sum(p.numel() for p in self.parameters())
        )
        template = files("lerobot_aim").joinpath("templates/model_card_template.md").read_text(encoding="utf-8")
        return ModelCard.from_template(
            card_data,
            template_str=template,
            aim=aim,
            dataset_repo_id=dataset_repo_id,
            policy_repo_id=self.config.repo_id,
            **context,
        )

    def decode_value_maps(self) -> Tensor:
        """The last chunk's imagined value-map canvases (B, F, 3, H, W) in [0, 1], F = s h frames
        (s the codec's temporal stride): frame i shows dataset step t + (i + 1) * frame_stride."""
        if self.model.value is None:
            raise ValueError("This policy has no value stream (attention_mode='no_value'): it predicts no value maps.")
        return self._decode_future(self.last_predicted_latents[:, self._frozen.codec.latent_channels :])

    def decode_predicted_rgb(self) -> Tensor:
        """The last chunk's imagined RGB canvases (B, F, 3, H, W) in [0, 1], as :meth:`decode_value_maps`."""
        return self._decode_future(self.last_predicted_latents[:, : self._frozen.codec.latent_channels])

    def _decode_future(self, latents: Tensor) -> Tensor:
        """(B, C, n (k+1+h), H, W) codec latents of n chunks, each its context then its future ->
        (B, n s h, 3, H, W) canvases in [0, 1] of the futures.

        A causal codec reads the first latent of a clip as a single image: each chunk's future is
        decoded after its context latents, whose frames are then dropped."""
        cfg, codec = self.config, self._frozen.codec
        per_chunk = cfg.history_frames + 1 + cfg.future_frames
        context_frames = 1 + cfg.history_frames * codec.temporal_stride
        videos = []
        with torch.no_grad():
            for chunk in latents.split(per_chunk, dim=2):
                if chunk.shape[2] != per_chunk:
                    raise ValueError(
                        f"Latents of {latents.shape[2]} frames do not split into chunks of {per_chunk} "
                        "(context then future) frames."
                    )
                z = chunk.to(self._device()).to(next(codec.parameters(), chunk).dtype)
                videos.append(codec.decode(z)[:, :, context_frames:])
        video = torch.cat(videos, dim=2)
        return ((video.float().transpose(1, 2) + 1) / 2).clamp(0, 1)

    def decode_predicted_latents(self, latents: Tensor) -> np.ndarray:
        """lerobot-eval's predicted video (``--policy.save_predicted_video=true``) from the concatenated
        ``last_predicted_latents`` of an episode: for the first env, the imagined RGB frames beside the
        imagined value maps overlaid on them (the RGB frames alone without a value stream),
        (T, H, W or 2W, 3) uint8, one frame per ``frame_stride`` steps."""
        from lerobot_aim.viz.contact_sheet import overlay_value_map

        channels = self._frozen.codec.latent_channels
        rgb = self._decode_future(latents[:1, :channels])[0].permute(0, 2, 3, 1).cpu().numpy()
        rgb = (rgb * 255).round().astype(np.uint8)
        if latents.shape[1] == channels:
            return rgb
        value = self._decode_future(latents[:1, channels:])[0].mean(1).cpu().numpy()
        overlays = np.stack([overlay_value_map(f, v) for f, v in zip(rgb, value, strict=True)])
        return np.concatenate([rgb, overlays], axis=2)


@dataclass
class EncodedSample:
    """A training sample as the network sees it (:meth:`AIMPolicy.encode_sample`).

    context: the clean context; future: the clean future latents (B, C, h, H, W) of RGB and value maps
    (value None without a value stream) and the future actions (B, chunk, A), normalised;
    frame_mask: (B, h) bool, future latent frames within the episode; action_mask: (B, chunk) bool.
    """

    context: Context
    future: Prediction
    frame_mask: Tensor
    action_mask: Tensor


def _frame_errors(prediction: Tensor, target: Tensor) -> Tensor:
    """(B, h) mean squared error per future latent frame of (B, C, h, H, W) tensors."""
    return (prediction.float() - target.float()).square().mean(dim=(1, 3, 4))


def _masked_mean(errors: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``errors`` over the entries where ``mask`` is true (0 when none is)."""
    mask = mask.to(errors.dtype)
    return (errors * mask).sum() / mask.sum().clamp(min=1)


def finite_actions(actions: Tensor) -> Tensor:
    """``actions``, or a RuntimeError when any is NaN or infinite: a robot is never handed one."""
    if not torch.isfinite(actions).all():
        raise RuntimeError(
            "The planned action chunk is not finite (NaN or inf): refusing to return it. The observation or the "
            "policy's weights hold non-finite values; check the inputs (cameras, state) and the checkpoint."
        )
    return actions
