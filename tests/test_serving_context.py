"""A served AIM plans from the context a local ``select_action`` loop gives it: the same frames at the
configured stride and the same executed actions, bit for bit, at every planning step.

The reference is the local loop (LeRobot's observation conversion, the checkpoint's processors,
``select_action``) driving the same simulated robot; the served run goes through the real gRPC path
(``lerobot-aim-robot-client`` and ``lerobot-aim-policy-server`` on loopback). Contexts are captured
where the network receives them (the outputs of ``AIMPolicy.chunk_inputs``), and each chunk's noise
is drawn from a seed of its env step, so that equal contexts give equal actions in both runs.
"""

import pytest
import torch

from tests.conftest import save_tiny_checkpoint
from tests.serving_helpers import JOINTS, TASK, run_client, sim_robot_config

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("serving_logs")]

N_ACTION_STEPS = 3  # < the 4 past actions of the tiny preset: a context spans two chunks
STEPS = 14  # planning at 0, 3, 6, 9, 12
PLANNING_STEPS = list(range(0, STEPS, N_ACTION_STEPS))
CAMERA_HW = (32, 32)  # the policy's own size: the server's resize leaves the frames as they are
ACTION_MEAN, ACTION_STD = torch.tensor([0.5, -1.0, 2.0, 0.0]), torch.tensor([2.0, 0.5, 3.0, 1.5])


@pytest.fixture(scope="module")
def context_checkpoint(tmp_path_factory):
    """A tiny checkpoint that plans every 3 steps, with action statistics that are not (0, 1)."""
    from lerobot.policies import make_pre_post_processors
    from lerobot.processor.normalize_processor import hotswap_stats

    from lerobot_aim.modeling_aim import AIMPolicy

    path = save_tiny_checkpoint(tmp_path_factory.mktemp("context") / "ckpt", ["head"], image_hw=CAMERA_HW)
    policy = AIMPolicy.from_pretrained(path)
    policy.config.n_action_steps = N_ACTION_STEPS
    policy.save_pretrained(path)
    stats = {
        "action": {"mean": ACTION_MEAN, "std": ACTION_STD},
        "observation.state": {"mean": torch.zeros(4), "std": torch.ones(4)},
    }
    for pipeline in make_pre_post_processors(policy.config, pretrained_path=str(path)):
        hotswap_stats(pipeline, stats).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def context_server(context_checkpoint, serving_logs):
    from lerobot_aim.serving.policy_server import start_server
    from tests.serving_helpers import server_config

    running = start_server(server_config(context_checkpoint, fps=100))
    yield running
    running.stop()


@pytest.fixture
def planned_contexts(monkeypatch):
    """[(env step, context latents, past actions)] of every chunk planned while the test runs."""
    from lerobot_aim.modeling_aim import AIMPolicy

    records = []
    chunk_inputs = AIMPolicy.chunk_inputs

    def recorded(self, batch):
        step = self.history.step
        torch.manual_seed(1000 + step)  # the chunk's noise follows from its env step
        context, noise = chunk_inputs(self, batch)
        records.append((step, context.obs_latents.clone(), context.past_actions.clone()))
        return context, noise

    monkeypatch.setattr(AIMPolicy, "chunk_inputs", recorded)
    return records


def served_run(client, server, records, steps):
    """Drive ``client`` until its robot ran ``steps`` actions; the contexts the server planned from
    (once its last inference is over) and the actions the robot ran."""
    actions = run_client(client, want=steps)
    with server.servicer._inference_lock:  # a chunk being planned when the client stopped
        contexts = list(records)
    records.clear()
    return contexts, actions


def local_run(checkpoint, steps):
    """The reference: ``select_action`` in a local loop on the same simulated robot."""
    from lerobot.async_inference.helpers import raw_observation_to_observation
    from lerobot.policies import make_pre_post_processors
    from lerobot.utils.feature_utils import hw_to_dataset_features

    from lerobot_aim.modeling_aim import AIMPolicy
    from lerobot_aim.serving.sim_robot import AIMSimRobot

    policy = AIMPolicy.from_pretrained(checkpoint)
    preprocessor, postprocessor = make_pre_post_processors(policy.config, pretrained_path=str(checkpoint))
    robot = AIMSimRobot(sim_robot_config(CAMERA_HW, seed=3))
    robot.connect()
    features = hw_to_dataset_features(robot.observation_features, "observation", use_video=False)
    policy.reset()
    for _ in range(steps):
        raw = {**robot.get_observation(), "task": TASK}
        batch = preprocessor(raw_observation_to_observation(raw, features, policy.config.image_features))
        action = postprocessor(policy.select_action(batch))[0]
        robot.send_action({f"{j}.pos": action[i].item() for i, j in enumerate(JOINTS)})
    return list(robot.actions)


def client_config(checkpoint, port):
    return dict(
        policy_type="aim",
        pretrained_name_or_path=str(checkpoint),
        robot=sim_robot_config(CAMERA_HW, seed=3),
        actions_per_chunk=N_ACTION_STEPS,
        chunk_size_threshold=0.0,  # plan when the queue is empty: every N_ACTION_STEPS, as locally
        aggregate_fn_name="latest_only",
        server_address=f"127.0.0.1:{port}",
        fps=100,
        task=TASK,
    )


def test_served_aim_plans_from_the_context_of_a_local_loop(
    context_checkpoint, context_server, planned_contexts
):
    from lerobot_aim.serving.robot_client import AIMRobotClient, AIMRobotClientConfig

    client = AIMRobotClient(AIMRobotClientConfig(**client_config(context_checkpoint, context_server.port)))
    served, served_actions = served_run(client, context_server, planned_contexts, STEPS)
    local_actions = local_run(context_checkpoint, STEPS)
    local = list(planned_contexts)

    assert [step for step, _, _ in local] == PLANNING_STEPS
    assert [step for step, _, _ in served][: len(local)] == PLANNING_STEPS
    for (step, served_obs, served_past), (_, local_obs, local_past) in zip(served, local, strict=False):
        assert torch.equal(served_obs, local_obs), f"context frames differ at step {step}"
        assert torch.equal(served_past, local_past), f"past actions differ at step {step}"
    assert served_actions[:STEPS] == local_actions  # so the robot ran the same actions, bit for bit

    # Not a trivial context: past actions from two chunks, history frames that are not the current one.
    _, obs, past = local[-1]
    assert bool((past != 0).all()) and not torch.equal(obs[:, :, 0], obs[:, :, -1])


@pytest.mark.parametrize("client", ["lerobot", "aim-with-lerobot-defaults"])
def test_past_actions_are_the_ones_the_robot_ran(
    client, context_checkpoint, context_server, planned_contexts, monkeypatch
):
    """Against the robot's own log: LeRobot's client (it labels observations with the last action it
    ran and reports none: the server still plans at the right env steps, from the actions it sent;
    frames it never sent are stood in for by the nearest earlier one), and lerobot-aim-robot-client
    with LeRobot's default threshold and blending of overlapping chunks (the blends it reports)."""
    from lerobot.async_inference.configs import RobotClientConfig
    from lerobot.async_inference.robot_client import RobotClient

    from lerobot_aim.serving.robot_client import AIMRobotClient, AIMRobotClientConfig

    if client == "lerobot":
        robot_client = RobotClient(
            RobotClientConfig(**client_config(context_checkpoint, context_server.port))
        )
    else:  # chunks of 8 at 4 Hz: the server has 1 s to plan before the queue runs dry, so the next
        # chunk arrives while the robot still has actions queued (at 10 Hz, 0.4 s were not always
        # enough on a loaded 2-core CI machine: no overlap, nothing blended)
        config = client_config(context_checkpoint, context_server.port)
        config.update(
            chunk_size_threshold=0.5, aggregate_fn_name="weighted_average", actions_per_chunk=8, fps=4
        )
        robot_client = AIMRobotClient(AIMRobotClientConfig(**config))
    blends = []
    normalise = context_server.servicer._normalise
    monkeypatch.setattr(context_server.servicer, "_normalise", lambda a: blends.append(a) or normalise(a))
    served, robot_actions = served_run(robot_client, context_server, planned_contexts, STEPS)
    assert (len(blends) > 0) == (client != "lerobot")  # reported blends, normalised by the server
    if client == "lerobot":
        assert [step for step, _, _ in served][: len(PLANNING_STEPS)] == PLANNING_STEPS
    ran = torch.tensor([[a[f"{j}.pos"] for j in JOINTS] for a in robot_actions])
    normalised = (ran - ACTION_MEAN) / ACTION_STD
    planned = [(step, past) for step, _, past in served if step <= len(robot_actions)]
    assert len(planned) >= 4, [step for step, _, _ in served]
    for step, past in planned:
        n_past = past.shape[1]
        expected = torch.stack(
            [normalised[s] if s >= 0 else torch.zeros(4) for s in range(step - n_past, step)]
        )
        torch.testing.assert_close(past[0], expected, rtol=0, atol=1e-5, msg=f"past actions at step {step}")
