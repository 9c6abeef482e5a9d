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
from importlib.resources import files
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from lerobot.policies.pretrained import PreTrainedPolicy
from lerobot.utils.constants import ACTION
from torch import Tensor

from lerobot_aim.configuration_aim import AIMConfig
from lerobot_aim.data.schema import check_value_maps
from lerobot_aim.history import ContextHistory
from lerobot_aim.model import AIMTransformer, Prediction, WanRGBStream, make_codec, make_text_encoder
from lerobot_aim.model.flow_matching import add_noise, sample_sigmas, velocity_target
from lerobot_aim.model.mot import FP32_MODULES
from lerobot_aim.processor_aim import OBS_RGB_CANVAS, OBS_VALUE_CANVAS

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class _Frozen:
    """Holds the frozen codec and text encoder outside the module tree: they are neither trained
    nor saved with the policy (they load from their own folders or Hub ids)."""

    def __init__(self, codec, text_encoder):
        self.codec, self.text_encoder = codec, text_encoder

    def to(self, device) -> None:
        self.codec.to(device)
        self.text_encoder.to(device)


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
        self._frozen = _Frozen(codec, text)
        rgb = None
        if init_from_wan and config.wan_path:
            rgb = WanRGBStream.from_diffusers(config.wan_path, torch_dtype=dtype)
        self.model = AIMTransformer(config, config.action_dim, codec.latent_channels, rgb=rgb).set_dtype(
            dtype
        )
        if config.freeze_rgb_stream:
            self.model.rgb.requires_grad_(False)
        self.last_prediction: Prediction | None = None
        self.last_predicted_latents: Tensor | None = None
        self.reset()

    @classmethod
    def from_pretrained(cls, pretrained_name_or_path, **kwargs):
        """Load a saved AIM policy; the Wan initialisation is skipped (the checkpoint has all weights)."""
        return super().from_pretrained(pretrained_name_or_path, init_from_wan=False, **kwargs)

    @classmethod
    def _load_as_safetensor(cls, model, model_file: str, map_location: str, strict: bool):
        from safetensors import safe_open

        with safe_open(model_file, framework="pt") as f:
            for key in ("model.action.action_encoder.0.weight", "model.action.proj_out.weight"):
                if key in f.keys():  # noqa: SIM118 (safe_open has no __contains__)
                    saved, wanted = tuple(f.get_slice(key).get_shape()), tuple(model.state_dict()[key].shape)
                    if saved != wanted:
                        raise ValueError(
                            f"The checkpoint {model_file} was trained with another action size ({key}: {saved}) "
                            f"than this dataset or env gives ({wanted}, action dim {model.config.action_dim}). "
                            "Fine-tune from a checkpoint with the same action space, or map the actions first."
                        )
        return super()._load_as_safetensor(model, model_file, map_location, strict)

    def get_optim_params(self) -> dict:
        return [p for p in self.model.parameters() if p.requires_grad]

    def _save_pretrained(self, save_directory: Path, state_dict: dict[str, Tensor] | None = None) -> None:
        """Write the config and ``model.safetensors``; both LeRobot signatures.

        LeRobot 0.6.1 passes ``state_dict``, the full state dict that lerobot-train gathers from an FSDP
        run; LeRobot main calls ``_save_pretrained(save_directory)`` and gathers sharded weights itself.
        A gathered state dict holds FSDP's fp32 master weights: it is written in the policy's own dtypes
        (``config.dtype`` weights, fp32 norms and modulation, as ``set_dtype`` keeps them), so a sharded
        run's checkpoint has the size and the values a single-process one would have.
        """
        if state_dict is None:
            super()._save_pretrained(save_directory)
            return
        dtype = DTYPES[self.config.dtype]

        def saved(key: str, tensor: Tensor) -> Tensor:
            if not tensor.is_floating_point() or any(part in FP32_MODULES for part in key.split(".")):
                return tensor
            return tensor.to(dtype)

        super()._save_pretrained(save_directory, state_dict={k: saved(k, v) for k, v in state_dict.items()})

    def reset(self) -> None:
        """Forget the episode: frame and action history (``self.history``), queued actions."""
        cfg = self.config
        self.history = ContextHistory(cfg.num_past_actions, cfg.frame_stride, cfg.action_dim)
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
        """(B, T, 3, H, W) canvas in [-1, 1] -> (B, C, T', h, w) latents of the frozen codec."""
        codec = self._frozen.codec
        with torch.no_grad():
            return codec.encode(canvas.transpose(1, 2).to(next(codec.parameters(), canvas).dtype)).float()

    def _encode_text(self, batch: dict, batch_size: int) -> Tensor:
        tasks = batch.get("task")
        if tasks is None:
            tasks = [""] * batch_size
        elif isinstance(tasks, str):
            tasks = [tasks] * batch_size
        return self._frozen.text_encoder(list(tasks)).float()

    def _model_dtype(self) -> torch.dtype:
        return DTYPES[self.config.dtype]

    def _split_actions(self, batch: dict) -> tuple[Tensor, Tensor, Tensor]:
        """Past actions (pads zeroed, as at the start of an episode), future chunk, future mask."""
        actions = batch[ACTION]
        n_past = self.config.num_past_actions
        pad = batch.get(
            f"{ACTION}_is_pad", torch.zeros(actions.shape[:2], dtype=torch.bool, device=actions.device)
        )
        past = actions[:, :n_past].masked_fill(pad[:, :n_past, None], 0.0)
        return past, actions[:, n_past:], ~pad[:, n_past:]

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict]:
        """Stage I loss on a training batch (frames at ``observation_delta_indices``, actions at
        ``action_delta_indices``); returns the loss and each term for logging."""
        cfg = self.config
        self._device()
        if OBS_RGB_CANVAS not in batch:
            raise KeyError(
                "AIMPolicy.forward needs the AIM preprocessor's packed frames (make_aim_pre_post_processors)."
            )
        latents = self._encode_video(batch[OBS_RGB_CANVAS])
        context = cfg.history_frames + 1
        obs, future_rgb = latents[:, :, :context], latents[:, :, context:]
        future_value = None
        if self.model.value is not None:
            if OBS_VALUE_CANVAS not in batch:
                raise KeyError(
                    "The batch has no value maps (`observation.value_maps.<cam>`): annotate the dataset with "
                    "`lerobot-aim-annotate`, or train the baseline with --policy.attention_mode=no_value."
                )
            future_value = self._encode_video(batch[OBS_VALUE_CANVAS])[:, :, context:]
        past_actions, future_actions, action_mask = self._split_actions(batch)
        text = self._encode_text(batch, obs.shape[0])

        batch_size, device, dtype = obs.shape[0], obs.device, self._model_dtype()
        video_sigma = sample_sigmas(batch_size, cfg.video_train_shift, device)
        action_sigma = sample_sigmas(batch_size, cfg.action_train_shift, device)
        noise_rgb, noise_actions = torch.randn_like(future_rgb), torch.randn_like(future_actions)
        noise_value = torch.randn_like(future_value) if future_value is not None else None
        pred = self.model(
            obs.to(dtype),
            past_actions.to(dtype),
            text.to(dtype),
            add_noise(future_rgb, noise_rgb, video_sigma).to(dtype),
            None if future_value is None else add_noise(future_value, noise_value, video_sigma).to(dtype),
            video_sigma,
            add_noise(future_actions, noise_actions, action_sigma).to(dtype),
            action_sigma,
        )
        loss_rgb = F.mse_loss(pred.rgb.float(), velocity_target(future_rgb, noise_rgb))
        action_err = (pred.actions.float() - velocity_target(future_actions, noise_actions)).square().mean(-1)
        loss_act = (action_err * action_mask).sum() / action_mask.sum().clamp(min=1)
        loss = loss_rgb + cfg.lambda_act * loss_act
        logs = {"loss_rgb": loss_rgb.item(), "loss_act": loss_act.item()}
        if future_value is not None:
            loss_map = F.mse_loss(pred.value.float(), velocity_target(future_value, noise_value))
            loss = loss + cfg.lambda_map * loss_map
            logs["loss_map"] = loss_map.item()
        return loss, logs

    # ------------------------------------------------------------------------------------------
    def _context(self, batch: dict) -> tuple[Tensor, Tensor]:
        """Context latents (B, C, k+1, h, w) and past actions (B, n_past, A) at the history's current
        step, whose packed frame is ``batch``'s (:meth:`ContextHistory.context`)."""
        self.history.record_frame(batch[OBS_RGB_CANVAS])
        frames, past_actions = self.history.context()  # (B, 1 + stride*k, 3, H, W), (B, n_past, A)
        return self._encode_video(frames), past_actions

    def chunk_inputs(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor, Prediction]:
        """Everything one chunk is sampled from, in the model's dtype: context latents (B, C, k+1, h, w),
        past actions (B, n_past, A), instruction (B, Lt, D) and Gaussian noise for x, m and a."""
        cfg, device, dtype = self.config, self._device(), self._model_dtype()
        obs, past_actions = self._context(batch)
        batch_size, channels, _, height, width = obs.shape
        text = self._encode_text(batch, batch_size)
        video_shape = (batch_size, channels, cfg.future_frames, height, width)
        noise = Prediction(
            torch.randn(video_shape, device=device, dtype=dtype),
            torch.randn(video_shape, device=device, dtype=dtype) if self.model.value is not None else None,
            torch.randn(batch_size, cfg.chunk_size, cfg.action_dim, device=device, dtype=dtype),
        )
        return obs.to(dtype), past_actions.to(dtype), text.to(dtype), noise

    def remember(self, pred: Prediction) -> None:
        """Keep a chunk's imagined future for pictures and lerobot-eval's predicted-video hook (which
        concatenates ``last_predicted_latents`` along time and decodes them once)."""
        self.last_prediction = pred
        value = pred.value if pred.value is not None else torch.zeros_like(pred.rgb)
        self.last_predicted_latents = torch.cat([pred.rgb, value], dim=1)

    @torch.no_grad()
    def predict_action_chunk(self, batch: dict[str, Tensor], **kwargs) -> Tensor:
        """(B, chunk_size, action_dim) normalised actions for the current observation.

        ``batch`` holds the current packed frame; the history comes from earlier calls (``reset``
        starts a new episode).
        """
        cfg = self.config
        obs, past_actions, text, noise = self.chunk_inputs(batch)
        pred = self.model.sample(
            obs, past_actions, text, noise, num_steps=cfg.num_inference_steps,
            video_shift=cfg.video_infer_shift, action_shift=cfg.action_infer_shift, use_cache=cfg.use_context_cache,
        )  # fmt: skip
        self.remember(pred)
        return pred.actions.float()

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
        """The Hub model card, rendered from ``MODEL_CARD.md`` (architecture, data, use, limitations)."""
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
        template = files("lerobot_aim").joinpath("templates/MODEL_CARD.md").read_text(encoding="utf-8")
        return ModelCard.from_template(
            card_data,
            template_str=template,
            aim=aim,
            dataset_repo_id=dataset_repo_id,
            policy_repo_id=self.config.repo_id,
            **context,
        )

    def decode_value_maps(self, latents: Tensor | None = None) -> Tensor:
        """Predicted value-map canvases (B, h', 3, H, W) in [0, 1] (default: the last chunk's)."""
        return self._decode(latents if latents is not None else self.last_prediction.value)

    def _decode(self, latents: Tensor) -> Tensor:
        """Codec latents (B, C, h, H, W) -> canvases (B, h', 3, H, W) in [0, 1]."""
        codec = self._frozen.codec
        with torch.no_grad():
            video = codec.decode(latents.to(self._device()).to(next(codec.parameters(), latents).dtype))
        return ((video.float().transpose(1, 2) + 1) / 2).clamp(0, 1)

    def decode_predicted_latents(self, latents: Tensor) -> np.ndarray:
        """lerobot-eval's predicted video (``--policy.save_predicted_video=true``): for the first
        env, the imagined RGB frames beside the imagined value maps overlaid on them, (T, H, 2W, 3) uint8."""
        from lerobot_aim.viz.contact_sheet import overlay_value_map

        channels = latents.shape[1] // 2
        rgb = (self._decode(latents[:1, :channels])[0].permute(0, 2, 3, 1).cpu().numpy() * 255).astype(
            np.uint8
        )
        value = self._decode(latents[:1, channels:])[0].mean(1).cpu().numpy()
        overlays = np.stack([overlay_value_map(f, v) for f, v in zip(rgb, value, strict=True)])
        return np.concatenate([rgb, overlays], axis=2)
