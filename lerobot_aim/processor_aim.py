"""Pre- and post-processing of AIM, built from LeRobot's processor steps.

Pre: rename -> batch -> device -> pack views (T-pose canvas of RGB frames and of value maps, in
[-1, 1]) -> normalise state and actions with the dataset statistics.
Post: unnormalise actions -> CPU. Both pipelines are saved with the checkpoint.

Language is encoded by the policy's frozen text encoder (cached per instruction), so the task
string travels through the pipeline untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from lerobot.configs import PipelineFeatureType, PolicyFeature
from lerobot.processor import (
    ObservationProcessorStep,
    PolicyAction,
    PolicyProcessorPipeline,
    ProcessorStepRegistry,
)
from lerobot.processor.factory import make_default_policy_processor_steps, make_policy_processor_pipelines

from lerobot_aim.asvm.packing import pack_tpose
from lerobot_aim.configuration_aim import AIMConfig
from lerobot_aim.data.schema import image_key, value_map_key

OBS_RGB_CANVAS = "observation.aim.rgb"
OBS_VALUE_CANVAS = "observation.aim.value_maps"


@ProcessorStepRegistry.register(name="aim_pack_views")
@dataclass
class AIMPackViewsProcessorStep(ObservationProcessorStep):
    """Resize each camera (head to ``image_size``, wrists to half of it) and pack them T-pose.

    Reads ``observation.images.<cam>`` (and ``observation.value_maps.<cam>`` when present), each
    (B, [T,] 3, H, W) in [0, 1], and writes ``observation.aim.rgb`` / ``observation.aim.value_maps``:
    (B, [T,] 3, H_canvas, W_canvas) in [-1, 1], the codec's input range. Per-camera keys are dropped.
    """

    cameras: list[str] = field(default_factory=list)
    image_size: tuple[int, int] = (256, 320)

    def _pack(self, observation: dict, keys: list[str]) -> torch.Tensor:
        height, width = self.image_size
        views = []
        for i, key in enumerate(keys):
            view = observation.pop(key).float()
            if not torch.isfinite(view).all():
                raise ValueError(f"`{key}` holds NaN or infinite pixels: refusing to plan from it.")
            size = (height, width) if i == 0 else (height // 2, width // 2)
            if tuple(view.shape[-2:]) != size:
                lead = view.shape[:-3]
                view = F.interpolate(
                    view.flatten(0, -4), size=size, mode="bilinear", antialias=True, align_corners=False
                )
                view = view.unflatten(0, lead)
            views.append(view)
        return pack_tpose(views).clamp(0, 1) * 2 - 1

    def observation(self, observation: dict) -> dict:
        images = [image_key(c) for c in self.cameras]
        missing = [k for k in images if k not in observation]
        if missing:
            raise KeyError(
                f"AIM expects camera images {missing} but the observation has {sorted(observation)}. "
                "Set --policy.cameras to the cameras you record (head first), or rename them with --rename_map."
            )
        observation[OBS_RGB_CANVAS] = self._pack(observation, images)
        maps = [value_map_key(c) for c in self.cameras]
        if all(k in observation for k in maps):
            observation[OBS_VALUE_CANVAS] = self._pack(observation, maps)
        return observation

    def get_config(self) -> dict[str, Any]:
        return {"cameras": list(self.cameras), "image_size": list(self.image_size)}

    def transform_features(
        self, features: dict[PipelineFeatureType, dict[str, PolicyFeature]]
    ) -> dict[PipelineFeatureType, dict[str, PolicyFeature]]:
        return features


def make_aim_pre_post_processors(
    config: AIMConfig,
    dataset_stats: dict[str, dict[str, torch.Tensor]] | None = None,
) -> tuple[
    PolicyProcessorPipeline[dict[str, Any], dict[str, Any]],
    PolicyProcessorPipeline[PolicyAction, PolicyAction],
]:
    """The AIM processor pair (found by LeRobot's factory by its name)."""
    steps = make_default_policy_processor_steps(config, dataset_stats)
    pack = AIMPackViewsProcessorStep(cameras=list(config.cameras), image_size=tuple(config.image_size))
    return make_policy_processor_pipelines(
        input_steps=[steps.rename_observations, steps.add_batch_dim, steps.to_device, pack, steps.normalize],
        output_steps=[steps.unnormalize, steps.to_cpu],
    )
