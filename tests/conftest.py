import logging
from pathlib import Path

import pytest
import torch

from lerobot_aim import load_preset

logging.getLogger("lerobot.configs.policies").setLevel(logging.ERROR)


@pytest.fixture
def tiny_config():
    """The tiny preset, smaller still for unit tests: 2 layers."""
    return load_preset("aim_tiny", num_layers=2, device="cpu")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def with_one_camera(config, camera="head", size=32, action_dim=2):
    """``config`` set up as a policy of one ``camera`` with value maps, ``size``-pixel images, ``action_dim`` actions."""
    from lerobot.configs import FeatureType, PolicyFeature

    config.cameras = [camera]
    config.input_features = {
        f"observation.images.{camera}": PolicyFeature(FeatureType.VISUAL, (3, size, size)),
        f"observation.value_maps.{camera}": PolicyFeature(FeatureType.VISUAL, (3, size, size)),
    }
    config.output_features = {"action": PolicyFeature(FeatureType.ACTION, (action_dim,))}
    return config


def save_tiny_checkpoint(path: Path, cameras: list[str], image_hw=(64, 64), action_dim=4, state_dim=4) -> Path:
    """A randomly initialised tiny AIM checkpoint with processors, in LeRobot's layout."""
    from lerobot.configs import FeatureType, PolicyFeature

    from lerobot_aim.modeling_aim import AIMPolicy
    from lerobot_aim.processor_aim import make_aim_pre_post_processors

    config = load_preset("aim_tiny", num_layers=2, device="cpu", cameras=cameras)
    config.input_features = {
        f"observation.images.{cam}": PolicyFeature(FeatureType.VISUAL, (3, *image_hw)) for cam in cameras
    }
    config.input_features["observation.state"] = PolicyFeature(FeatureType.STATE, (state_dim,))
    config.output_features = {"action": PolicyFeature(FeatureType.ACTION, (action_dim,))}
    stats = {
        "action": {"mean": torch.zeros(action_dim), "std": torch.ones(action_dim)},
        "observation.state": {"mean": torch.zeros(state_dim), "std": torch.ones(state_dim)},
    }
    policy = AIMPolicy(config)
    pre, post = make_aim_pre_post_processors(config, stats)
    for thing in (policy, pre, post):
        thing.save_pretrained(path)
    return path


# ----------------------------------------------------------------------------------------------
# Serving tests (tests/test_serving_*.py): their fixtures live in tests/serving_helpers.py.
# RoboTwin tests (tests/test_robotwin_*.py): their datasets live in tests/robotwin_helpers.py.
pytest_plugins = ["tests.serving_helpers", "tests.robotwin_helpers"]
