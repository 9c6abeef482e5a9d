"""AIMConfig: presets load, inconsistent settings are refused with an actionable message."""

import json
import subprocess
import sys

import pytest

from lerobot_aim import AIMConfig, load_preset, preset_path
from lerobot_aim.configuration_aim import PRESETS_DIR, AIMConfigError


@pytest.mark.parametrize("name", ["aim_tiny", "aim_wan22_5b"])
def test_presets_load(name):
    config = load_preset(name, device="cpu")
    assert config.type == "aim"
    assert config.chunk_size == config.future_frames * config.actions_per_latent_frame
    assert config.observation_delta_indices[0] == -config.history_frames * config.actions_per_latent_frame
    assert config.action_delta_indices == list(range(-config.num_past_actions, config.chunk_size))


def test_wan22_5b_preset_has_the_paper_sizes():
    config = load_preset("aim_wan22_5b", device="cpu")
    assert (config.num_layers, config.hidden_size, config.ffn_dim) == (30, 3072, 14336)
    assert config.codec == "wan_vae" and config.text_encoder == "umt5" and config.dtype == "bfloat16"
    assert config.actions_per_latent_frame == 4  # the Wan VAE's temporal stride


def test_presets_are_train_configs():
    for path in PRESETS_DIR.glob("*.json"):
        data = json.loads(path.read_text())
        assert data["policy"]["type"] == "aim", path
    assert (PRESETS_DIR.parent.parent / "configs" / "aim_tiny.json").is_file()  # the root-level link


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"attention_mode": "full"}, "Unknown `attention_mode`"),
        ({"action_width": 4096}, "`action_width` (4096) must be in (0, 3072]"),
        ({"codec": "vqgan"}, "Unknown `codec`"),
        ({"n_action_steps": 99}, "`n_action_steps` (99) cannot exceed"),
        ({"image_size": (250, 320)}, "`image_size` (250, 320) cannot be encoded"),
        ({"attention_head_dim": 5}, "`attention_head_dim` (5) must be even"),
        ({"cameras": ["a", "b", "c", "d"]}, "at most 3 views"),
        ({"num_attention_heads": 1, "action_width": 128}, "more than the streams' width"),
        ({"num_video_inference_steps": 11}, "`num_video_inference_steps` (11) must be in [1"),
    ],
)
def test_bad_settings_are_refused(overrides, message):
    with pytest.raises(AIMConfigError) as error:
        load_preset("aim_wan22_5b", device="cpu", **overrides)
    assert message in str(error.value)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="aim_tiny"):
        preset_path("aim_huge")


def test_camera_missing_from_inputs_is_named(tiny_config):
    from lerobot.configs import FeatureType, PolicyFeature

    tiny_config.cameras = ["head", "left_wrist"]
    tiny_config.input_features = {"observation.images.head": PolicyFeature(FeatureType.VISUAL, (3, 32, 32))}
    with pytest.raises(ValueError, match=r"\['left_wrist'\].*--rename_map"):
        tiny_config.validate_features()


def test_config_round_trips_through_save_pretrained(tmp_path, tiny_config):
    tiny_config.save_pretrained(tmp_path)
    loaded = AIMConfig.from_pretrained(tmp_path)
    assert loaded == tiny_config


def test_tiny_presets_have_streams_as_wide_as_their_tokens():
    for name in ("aim_tiny", "aim_tiny_robotwin"):
        config = load_preset(name, device="cpu")
        token = config.latent_channels * config.patch_size[0] * config.patch_size[1] * config.patch_size[2]
        assert config.hidden_size >= token, name
    with pytest.raises(
        AIMConfigError, match=r"48 x 4 = 192 numbers.*4 x 32 = 128.*--policy.num_attention_heads"
    ):
        load_preset("aim_tiny", num_attention_heads=4, device="cpu")  # the tiny preset before the fix


def _train_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lerobot.scripts.lerobot_train", "--dataset.repo_id=me/none", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--policy.type=aim", "--policy.image_size=[30,30]"], "Set --policy.image_size to e.g. [64, 64]"),
        (["--policy.type=aim", "--policy.attention_mode=full"], "Unknown `attention_mode` 'full'"),
        (
            [f"--config_path={PRESETS_DIR / 'aim_tiny.json'}", "--policy.num_attention_heads=4"],
            "streams' width",
        ),
    ],
)
def test_lerobot_train_prints_why_a_setting_is_refused(args, message):
    """Through lerobot-train's own parser (draccus), not only in Python."""
    result = _train_cli(*args)
    assert result.returncode != 0
    assert message in result.stderr + result.stdout


@pytest.mark.slow
def test_camera_list_flag_next_to_a_preset_parses_in_the_documented_json_form(tmp_path):
    """With --config_path, draccus reads a list flag as JSON: `--policy.cameras='["front","wrist"]'` (the
    form README and docs/real_arm.md show) reaches AIMConfig; the bare `[front,wrist]` does not parse."""
    common = [f"--config_path={PRESETS_DIR / 'aim_tiny.json'}", "--policy.push_to_hub=false",
              f"--dataset.root={tmp_path / 'missing'}", f"--output_dir={tmp_path / 'out'}"]  # fmt: skip
    documented = _train_cli(*common, '--policy.cameras=["front","wrist"]')
    assert "Could not decode" not in documented.stderr + documented.stdout
    assert "'cameras': ['front', 'wrist']" in documented.stderr + documented.stdout  # the parsed config
    bare = _train_cli(*common, "--policy.cameras=[front,wrist]")
    assert bare.returncode != 0 and "cameras" in bare.stderr + bare.stdout
