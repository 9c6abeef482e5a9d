"""AIMPolicy: loss terms, acting, save/load, and the errors a user can act on."""

from types import SimpleNamespace

import pytest
import torch

from lerobot_aim.modeling_aim import AIMPolicy
from lerobot_aim.processor_aim import make_aim_pre_post_processors
from tests.conftest import with_one_camera

CAM = "head"


def _config(tiny_config, action_dim=2):
    return with_one_camera(tiny_config, CAM, action_dim=action_dim)


def _stats(action_dim=2):
    return {"action": {"mean": torch.zeros(action_dim), "std": torch.ones(action_dim)}}


def _training_batch(config, batch_size=3):
    frames, actions = len(config.observation_delta_indices), len(config.action_delta_indices)
    return {
        f"observation.images.{CAM}": torch.rand(batch_size, frames, 3, 32, 32),
        f"observation.value_maps.{CAM}": torch.rand(batch_size, frames, 3, 32, 32),
        "action": torch.randn(batch_size, actions, config.action_dim),
        "action_is_pad": torch.zeros(batch_size, actions, dtype=torch.bool),
        "task": ["push the block"] * batch_size,
    }


def test_forward_logs_every_loss_term_and_trains(tiny_config):
    config = _config(tiny_config)
    policy = AIMPolicy(config)
    pre, _ = make_aim_pre_post_processors(config, _stats())
    batch = pre(_training_batch(config))
    loss, logs = policy(batch)
    assert set(logs) == {"loss_rgb", "loss_map", "loss_act"}
    expected = logs["loss_rgb"] + config.lambda_map * logs["loss_map"] + config.lambda_act * logs["loss_act"]
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert policy.model.action.blocks[0].attn1.to_q.weight.grad is not None


def test_padded_future_actions_do_not_count(tiny_config):
    config = _config(tiny_config)
    policy = AIMPolicy(config)
    pre, _ = make_aim_pre_post_processors(config, _stats())
    batch = pre(_training_batch(config))
    batch["action_is_pad"][:, config.num_past_actions + 2 :] = True
    torch.manual_seed(1)
    _, logs = policy(batch)

    def spoil_padded_predictions(module, args, output):
        output.actions[:, 2:] += 100.0  # wrong only where the chunk ran past the episode
        return output

    policy.model.register_forward_hook(spoil_padded_predictions)
    torch.manual_seed(1)
    _, logs_spoiled = policy(batch)
    assert logs["loss_act"] == pytest.approx(logs_spoiled["loss_act"], rel=1e-6)


def test_padded_future_frames_do_not_count(tiny_config):
    """Frames past the episode's end (LeRobot repeats the last one and flags it in `<key>_is_pad`)
    are left out of the RGB and value-map losses, as padded actions are of the action loss."""
    config = _config(tiny_config)
    policy = AIMPolicy(config)
    pre, _ = make_aim_pre_post_processors(config, _stats())
    raw = _training_batch(config)
    pad = torch.zeros(3, len(config.observation_delta_indices), dtype=torch.bool)
    pad[:, -1] = True  # the last future frame is past the end of the episode
    raw[f"observation.images.{CAM}_is_pad"] = pad
    batch = pre(raw)
    torch.manual_seed(1)
    _, logs = policy(batch)

    def spoil_padded_predictions(module, args, output):
        output.rgb[:, :, -1] += 100.0  # the last future latent frame holds the padded frame
        output.value[:, :, -1] += 100.0
        return output

    policy.model.register_forward_hook(spoil_padded_predictions)
    torch.manual_seed(1)
    _, logs_spoiled = policy(batch)
    assert logs["loss_rgb"] == pytest.approx(logs_spoiled["loss_rgb"], rel=1e-6)
    assert logs["loss_map"] == pytest.approx(logs_spoiled["loss_map"], rel=1e-6)


def test_state_is_read_when_asked(tiny_config):
    from lerobot.configs import FeatureType, PolicyFeature

    config = _config(tiny_config)
    config.use_state = True
    with pytest.raises(ValueError, match="use_state"):
        AIMPolicy(config)  # no observation.state among the inputs
    config.input_features["observation.state"] = PolicyFeature(FeatureType.STATE, (3,))
    policy = AIMPolicy(config).eval()
    stats = _stats() | {"observation.state": {"mean": torch.zeros(3), "std": torch.ones(3)}}
    pre, _ = make_aim_pre_post_processors(config, stats)
    raw = _training_batch(config)
    raw["observation.state"] = torch.randn(3, len(config.observation_delta_indices), 3)
    batch = pre(raw)
    torch.manual_seed(1)
    _, logs = policy(batch)
    batch["observation.state"] = batch["observation.state"] + 1.0
    torch.manual_seed(1)
    _, moved = policy(batch)
    assert logs["loss_act"] != moved["loss_act"]


def _act(policy, pre, post, steps=10, seed=0):
    torch.manual_seed(seed)
    policy.reset()
    obs = {
        f"observation.images.{CAM}": torch.linspace(0, 1, 2 * 3 * 32 * 32).reshape(2, 3, 32, 32),
        "task": ["go"] * 2,
    }
    return torch.stack([post(policy.select_action(pre(obs))) for _ in range(steps)])


def test_select_action_queues_a_chunk_and_batches_envs(tiny_config):
    config = _config(tiny_config)
    policy = AIMPolicy(config).eval()
    pre, post = make_aim_pre_post_processors(config, _stats())
    actions = _act(policy, pre, post, steps=config.n_action_steps + 1)
    assert actions.shape == (config.n_action_steps + 1, 2, 2)
    assert policy.last_prediction.value is not None
    assert policy.last_predicted_latents.shape[1] == 2 * policy.last_prediction.rgb.shape[1]
    assert policy.decode_value_maps().shape[-2:] == (32, 32)


def test_saved_and_reloaded_policy_acts_identically(tmp_path, tiny_config):
    config = _config(tiny_config)
    policy = AIMPolicy(config).eval()
    pre, post = make_aim_pre_post_processors(config, _stats())
    policy.save_pretrained(tmp_path)
    pre.save_pretrained(tmp_path)
    post.save_pretrained(tmp_path)
    reloaded = AIMPolicy.from_pretrained(tmp_path)
    from lerobot.policies.factory import make_pre_post_processors

    pre2, post2 = make_pre_post_processors(reloaded.config, pretrained_path=str(tmp_path))
    assert torch.equal(_act(policy, pre, post), _act(reloaded, pre2, post2))
    assert not any(k.startswith("_frozen") for k in policy.state_dict())  # codec/text encoder not saved


def test_checkpoint_of_another_action_size_is_refused_clearly(tmp_path, tiny_config):
    AIMPolicy(_config(tiny_config, action_dim=2)).save_pretrained(tmp_path)
    config = _config(tiny_config, action_dim=7)
    with pytest.raises(ValueError, match=r"another action size.*action dim 7"):
        AIMPolicy.from_pretrained(tmp_path, config=config)


def test_dataset_without_value_maps_names_the_annotate_command(tiny_config):
    config = _config(tiny_config)
    meta = SimpleNamespace(repo_id="me/plain", features={f"observation.images.{CAM}": {"dtype": "video"}})
    with pytest.raises(ValueError, match="lerobot-aim-annotate"):
        AIMPolicy(config, dataset_meta=meta)
    config.attention_mode = "no_value"  # the baseline needs no value maps
    AIMPolicy(config, dataset_meta=meta)


def test_value_maps_under_the_public_aim_name_get_a_rename_hint(tiny_config):
    config = _config(tiny_config)
    meta = SimpleNamespace(
        repo_id="me/aim_fork",
        features={f"observation.images.{CAM}": {}, f"observation.masks.{CAM}": {}},
    )
    with pytest.raises(ValueError, match="--rename_map"):
        AIMPolicy(config, dataset_meta=meta)


def test_unknown_camera_in_observation_is_named(tiny_config):
    config = _config(tiny_config)
    pre, _ = make_aim_pre_post_processors(config, _stats())
    with pytest.raises(Exception, match=r"observation.images.head"):
        pre({"observation.images.front": torch.rand(1, 3, 32, 32)})


def test_model_card_describes_the_checkpoint(tiny_config):
    config = _config(tiny_config)
    config.repo_id = "me/aim_tiny_synthetic"
    card = AIMPolicy(config).generate_model_card("me/synthetic", "aim", None, ["sim"])
    text = str(card)
    assert "intent-causal" in text and "`intent_causal`" in text
    assert "me/synthetic" in text and "lerobot-eval --policy.path=me/aim_tiny_synthetic" in text
    assert "license: apache-2.0" in text and "- aim" in text


@pytest.mark.parametrize("weights_dtype", [None, "float32"])
def test_fp32_master_weights_keep_the_updates_bf16_weights_round_away(tiny_config, weights_dtype):
    """One AdamW step at the 5B preset's learning rate (1e-5) moves each weight by about 1e-5, below
    half a bf16 spacing for most weights (|w| > 2^-9 = 0.002): kept in bf16 they stay where they were;
    kept in fp32 (bf16 compute under autocast) they all move."""
    config = _config(tiny_config)
    config.dtype, config.weights_dtype, config.optimizer_lr = "bfloat16", weights_dtype, 1e-5
    policy = AIMPolicy(config)
    weight = policy.model.rgb.blocks[0].attn1.to_q.weight
    assert weight.dtype == (torch.float32 if weights_dtype else torch.bfloat16)
    pre, _ = make_aim_pre_post_processors(config, _stats())
    optimizer = config.get_optimizer_preset().build(policy.get_optim_params())
    before = weight.detach().clone()
    loss, _ = policy(pre(_training_batch(config)))
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    moved = (weight.detach() != before).float().mean().item()
    if weights_dtype:
        assert moved > 0.99
    else:
        assert moved < 0.5
