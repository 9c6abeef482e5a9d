"""The history AIM plans from has the layout of a training sample, and survives a task change."""

import torch

from lerobot_aim.history import ContextHistory
from tests.conftest import with_one_camera


def test_the_context_is_laid_out_as_a_training_sample(tiny_config):
    """The truth is the training side: frames at ``observation_delta_indices`` (LeRobot repeats the
    episode's first frame before its start) and past actions at the negative
    ``action_delta_indices`` (zero before the start, as ``AIMPolicy`` zeroes padded ones)."""
    cfg = tiny_config
    frame_offsets = [i for i in cfg.observation_delta_indices if i <= 0]
    action_offsets = [i for i in cfg.action_delta_indices if i < 0]
    steps = 3 * cfg.num_past_actions
    frames, actions = torch.randn(steps, 2, 3, 4, 4), torch.randn(steps, 2, 5)
    history = ContextHistory(cfg.num_past_actions, cfg.frame_stride, action_dim=5)
    for t in range(steps):
        history.record_frame(frames[t])
        context, past = history.context()
        assert torch.equal(context, torch.stack([frames[max(t + i, 0)] for i in frame_offsets], dim=1))
        expected = [actions[t + i] if t + i >= 0 else torch.zeros(2, 5) for i in action_offsets]
        assert torch.equal(past, torch.stack(expected, dim=1))
        history.record_action(actions[t])
        history.next_step()


def test_a_step_without_a_frame_reads_the_nearest_earlier_one():
    history = ContextHistory(num_past_actions=4, frame_stride=2, action_dim=1)
    frames = {step: torch.full((1, 3, 2, 2), float(step)) for step in (1, 5, 6)}
    for step, frame in frames.items():
        history.record_frame(frame, step)
    history.step = 6
    context, past = history.context()
    assert context[0, :, 0, 0, 0].tolist() == [1.0, 1.0, 6.0]  # steps 2 and 4 -> 1, step 6
    assert torch.equal(past, torch.zeros(1, 4, 1))  # no action recorded: zeros


def test_drop_queued_actions_replans_from_the_kept_history(tiny_config):
    from lerobot_aim.modeling_aim import AIMPolicy
    from lerobot_aim.processor_aim import OBS_RGB_CANVAS

    policy = AIMPolicy(with_one_camera(tiny_config))
    planned = []
    policy.chunk_inputs = lambda batch, plan=policy.chunk_inputs: (
        planned.append(policy.history.step) or plan(batch)
    )
    actions = []
    for step in range(4):
        if step == 2:
            policy.drop_queued_actions()  # the task changed
        actions.append(policy.select_action({OBS_RGB_CANVAS: torch.rand(1, 3, 32, 32) * 2 - 1, "task": "go"}))
    assert planned == [0, 2]
    _, past = policy.history.context(2)
    assert torch.equal(past[:, -2:], torch.stack(actions[:2], dim=1))  # the actions run before the change
