"""The paper's setting, RoboTwin 2.0: its presets (the Wan2.2-5B one at LingBot-VA's token grid, the tiny
one for CPU) and the train configs that point ``lerobot-train`` / ``lerobot-eval`` at LeRobot's robotwin env.
"""

import torch

from lerobot_aim import load_preset
from lerobot_aim.data import schema
from tests.robotwin_helpers import CAMERAS, ROOT, H, W


def test_wan22_5b_robotwin_preset_builds_on_meta_with_the_lingbot_grid():
    from lerobot_aim.model import AIMTransformer, Context, Prediction
    from lerobot_aim.processor_aim import OBS_RGB_CANVAS, AIMPackViewsProcessorStep

    config = load_preset("aim_wan22_5b_robotwin", device="cpu")
    assert config.cameras == list(CAMERAS) and config.image_size == (256, 320)
    assert (config.codec, config.dtype, config.gradient_checkpointing) == ("wan_vae", "bfloat16", True)
    assert (
        config.wan_path == config.codec_path == config.text_encoder_path == "Wan-AI/Wan2.2-TI2V-5B-Diffusers"
    )
    # 2 future latent frames x 4 steps each (Wan VAE) = 8 actions per chunk at 25 fps, all executed.
    assert (config.chunk_size, config.n_action_steps) == (8, 8)
    assert config.observation_delta_indices == list(range(-4, 9))
    # RoboTwin's three 240x320 renders: head resized to 256x320, wrists to 128x160, T-pose 384x320.
    pack = AIMPackViewsProcessorStep(cameras=config.cameras, image_size=config.image_size)
    obs = {schema.image_key(cam): torch.rand(1, 3, H, W) for cam in CAMERAS}
    canvas = pack.observation(obs)[OBS_RGB_CANVAS]
    assert canvas.shape == (1, 3, 384, 320)
    latent_hw = (384 // config.codec_spatial_stride, 320 // config.codec_spatial_stride)
    assert latent_hw == (24, 20)  # LingBot-VA's RoboTwin grid: 12 x 10 = 120 tokens per latent frame

    with torch.device("meta"):
        model = AIMTransformer(config, 14, 48).set_dtype(torch.bfloat16)
        obs_latents = torch.empty(1, 48, config.history_frames + 1, *latent_hw, dtype=torch.bfloat16)
        future = torch.empty(1, 48, config.future_frames, *latent_hw, dtype=torch.bfloat16)
        past = torch.empty(1, config.num_past_actions, 14, dtype=torch.bfloat16)
        noisy_actions = torch.empty(1, config.chunk_size, 14, dtype=torch.bfloat16)
        sigma = torch.empty(1)
        context = Context(obs_latents, past, torch.empty(1, 512, 4096, dtype=torch.bfloat16))
        tokens = model.context_tokens(context)
        pred = model(context, Prediction(future, future, noisy_actions), sigma, sigma)
    assert tokens["rgb"].hidden.shape[1] == 2 * 120 and tokens["context_action"].hidden.shape[1] == 4
    assert pred.rgb.shape == pred.value.shape == (1, 48, 2, 24, 20)
    assert pred.actions.shape == (1, 8, 14)
    counts = {
        name: sum(p.numel() for p in getattr(model, name).parameters()) for name in ("rgb", "value", "action")
    }
    assert counts["rgb"] == 4_999_787_712  # Wan2.2-TI2V-5B
    assert counts["action"] < counts["value"] < counts["rgb"]


def test_presets_are_train_configs_for_the_robotwin_env():
    import draccus
    from lerobot.configs.train import TrainPipelineConfig
    from lerobot.envs.configs import RoboTwinEnvConfig

    for name in ("aim_wan22_5b_robotwin", "aim_tiny_robotwin"):
        path = ROOT / "configs" / f"{name}.json"
        cfg = draccus.parse(TrainPipelineConfig, config_path=str(path), args=["--dataset.repo_id=x/y"])
        assert cfg.policy.type == "aim" and cfg.policy.cameras == list(CAMERAS)
        assert isinstance(cfg.env, RoboTwinEnvConfig) and cfg.env.fps == 25 and cfg.env_eval_freq == 0
        assert (cfg.env.observation_height, cfg.env.observation_width, cfg.env.action_mode) == (H, W, "joint")
    tiny = load_preset("aim_tiny_robotwin", device="cpu")
    assert (tiny.codec, tiny.text_encoder, tiny.image_size) == ("pixel", "minilm", (48, 64))
    assert (tiny.chunk_size, tiny.n_action_steps) == (8, 8)  # the same 8-step chunk as the 5B preset
