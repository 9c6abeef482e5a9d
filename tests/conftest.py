import logging

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


# ----------------------------------------------------------------------------------------------
# Serving tests (tests/test_serving_*.py): their fixtures live in tests/serving_helpers.py.
pytest_plugins = ["tests.serving_helpers"]
