"""``lerobot-aim-robot-client``: LeRobot's RobotClient, sending what AIM needs, over a safe channel.

A subclass of ``lerobot.async_inference.robot_client.RobotClient``: the action queue, its threshold
and the aggregation of overlapping chunks are LeRobot's. What changes:

- observations: one per control step, labelled with its env step (the number of actions the robot
  has run), each with the actions run since the previous one and, while the queue still holds more
  than ``chunk_size_threshold`` of a chunk, marked history-only (:mod:`lerobot_aim.serving.episode`).
  AIM's server then plans from the context ``select_action`` would see: frames every
  ``frame_stride`` steps and the actions executed. (LeRobot's client sends observations only while
  its queue is short, labelled with the last action's step, and reports no action.)
- the channel: ``--token`` (or the ``LEROBOT_AIM_SERVER_TOKEN`` variable) as
  ``authorization: Bearer <token>`` metadata on every call; TLS with ``--tls=true`` (``--tls_ca`` for
  a private CA, ``--tls_cert``/``--tls_key`` for mutual TLS, ``--tls_server_name`` when the
  certificate names another host);
- action chunks are decoded with the allow-list unpickler (``--safe_actions``), so a rogue server
  cannot run code on the robot's computer either, and a chunk with a non-finite action is refused;
- a refusal by the server (bad observation, wrong checkpoint, wrong token, failed inference) stops
  the client with the server's message instead of retrying forever.

Example (simulated robot; replace with your robot's options)::

    LEROBOT_AIM_SERVER_TOKEN=... lerobot-aim-robot-client --robot.type=aim_sim \\
        --server_address=127.0.0.1:8080 --policy_type=aim \\
        --pretrained_name_or_path=<the server's --policy.path> --actions_per_chunk=8 --task="pick"
"""

import logging
import pickle  # nosec: only re-encodes objects the allow-list decoder produced
import sys
import threading
import time
from dataclasses import asdict
from pprint import pformat
from typing import Any

import grpc
from lerobot.async_inference.helpers import TimedObservation, visualize_action_queue_size
from lerobot.async_inference.robot_client import RobotClient
from lerobot.configs import parser
from lerobot.transport import services_pb2, services_pb2_grpc  # type: ignore
from lerobot.transport.utils import grpc_channel_options
from torch import Tensor

import lerobot_aim.serving.sim_robot  # noqa: F401  (registers --robot.type=aim_sim)
from lerobot_aim.serving.channel import make_channel
from lerobot_aim.serving.configs import AIMRobotClientConfig, ServingConfigError
from lerobot_aim.serving.episode import EXECUTED_ACTIONS, HISTORY_ONLY
from lerobot_aim.serving.messages import loads_actions
from lerobot_aim.serving.safe_pickle import UnsafePayloadError

# Server answers that retrying cannot change: the client stops with the server's message.
REFUSALS = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
    }
)


class CheckedStub:
    """An ``AsyncInferenceStub`` that reports the server's refusals to ``on_refusal(method, error)``
    (then re-raises them, as RobotClient expects) and, with ``safe_actions``, decodes GetActions
    answers with the allow-list unpickler and re-encodes them, so ``RobotClient`` only ever unpickles
    safe bytes."""

    def __init__(self, stub, logger: logging.Logger, on_refusal, safe_actions: bool = True):
        self._stub = stub
        self._logger = logger
        self._on_refusal = on_refusal
        self._safe_actions = safe_actions

    def _call(self, method: str, *args, **kwargs):
        try:
            return getattr(self._stub, method)(*args, **kwargs)
        except grpc.RpcError as e:
            if e.code() in REFUSALS:
                self._on_refusal(method, e)
            raise

    def Ready(self, *args, **kwargs):  # noqa: N802
        return self._call("Ready", *args, **kwargs)

    def SendPolicyInstructions(self, *args, **kwargs):  # noqa: N802
        return self._call("SendPolicyInstructions", *args, **kwargs)

    def SendObservations(self, *args, **kwargs):  # noqa: N802
        return self._call("SendObservations", *args, **kwargs)

    def GetActions(self, *args, **kwargs):  # noqa: N802
        response = self._call("GetActions", *args, **kwargs)
        if not self._safe_actions or not response.data:
            return response
        try:
            timed_actions = loads_actions(response.data)
        except UnsafePayloadError as e:
            self._logger.error(f"Refused an action chunk from the server: {e}")
            return services_pb2.Actions()
        return services_pb2.Actions(data=pickle.dumps(timed_actions))


class AIMRobotClient(RobotClient):
    """LeRobot's RobotClient sending every step's observation (with the actions run) over
    :func:`make_channel` (token, TLS), with checked action chunks."""

    def __init__(self, config: AIMRobotClientConfig):
        channel = make_channel(  # first: bad TLS files fail before the robot connects
            config.server_address,
            config,
            tls=config.uses_tls,
            tls_server_name=config.tls_server_name,
            options=grpc_channel_options(initial_backoff=f"{config.environment_dt:.4f}s"),
        )
        super().__init__(config)
        self.channel.close()  # LeRobot's plaintext channel, never used (channels connect lazily)
        self.channel = channel
        stub = services_pb2_grpc.AsyncInferenceStub(self.channel)
        self.stub = CheckedStub(stub, self.logger, self._stop_refused, safe_actions=config.safe_actions)
        self.failure: str | None = None  # the server's refusal that stopped the client
        self._unreported: dict[int, Tensor] = {}  # env step -> action run there, not yet sent
        self._observed_step = -1  # env step of the last observation that reached the server

    def _stop_refused(self, method: str, error: grpc.RpcError) -> None:
        self.failure = f"the policy server refused {method} ({error.code().name}): {error.details()}"
        self.logger.error(f"Stopping: {self.failure}")
        self.shutdown_event.set()

    def control_loop_action(self, verbose: bool = False) -> dict[str, Any]:
        """LeRobot's: run the next queued action; it is also kept for the next observation to report."""
        with self.action_queue_lock:
            self.action_queue_size.append(self.action_queue.qsize())
            timed_action = self.action_queue.get_nowait()
        performed = self.robot.send_action(self._action_tensor_to_action_dict(timed_action.get_action()))
        with self.latest_action_lock:
            self.latest_action = timed_action.get_timestep()
        self._unreported[timed_action.get_timestep()] = timed_action.get_action()
        return performed

    def control_loop_observation(self, task: str, verbose: bool = False) -> dict[str, Any] | None:
        """Send the observation of the current env step once (history-only while the queue is above
        LeRobot's threshold); again while the queue is empty and a chunk is due (``must_go``)."""
        with self.latest_action_lock:
            step = self.latest_action + 1  # actions are timed by the env step they run at
        with self.action_queue_lock:
            queue_empty = self.action_queue.empty()
        must_go = self.must_go.is_set() and queue_empty
        if step == self._observed_step and not must_go:
            return None
        raw_observation = self.robot.get_observation()
        raw_observation["task"] = task
        raw_observation[HISTORY_ONLY] = not self._ready_to_send_observation()
        reported = dict(self._unreported)
        raw_observation[EXECUTED_ACTIONS] = reported
        observation = TimedObservation(
            timestamp=time.time(), observation=raw_observation, timestep=step, must_go=must_go
        )
        if self.send_observation(observation):
            self._observed_step = step
            for executed_step in reported:
                del self._unreported[executed_step]
            if must_go:
                self.must_go.clear()  # set again when a chunk arrives
        return raw_observation

    def control_loop(self, task: str, verbose: bool = False) -> None:
        """LeRobot's loop at ``fps``: run an action when one is queued, then observe (every step)."""
        self.start_barrier.wait()
        self.logger.info("Control loop thread starting")
        while self.running:
            start = time.perf_counter()
            if self.actions_available():
                self.control_loop_action(verbose)
            self.control_loop_observation(task, verbose)
            time.sleep(max(0.0, self.config.environment_dt - (time.perf_counter() - start)))


def run_client(cfg: AIMRobotClientConfig) -> None:
    """LeRobot's ``async_client`` with :class:`AIMRobotClient`; exits with the server's message when
    the server refuses the client."""
    logging.info(pformat(asdict(cfg)))
    client = AIMRobotClient(cfg)
    if not client.start():
        client.stop()
        raise SystemExit(
            f"lerobot-aim-robot-client: {client.failure or 'the policy server could not be reached (see above)'}"
        )
    client.logger.info("Starting action receiver thread...")
    receiver = threading.Thread(target=client.receive_actions, daemon=True)
    receiver.start()
    try:
        client.control_loop(task=cfg.task)
    except KeyboardInterrupt:
        pass
    finally:
        client.stop()
        receiver.join(timeout=5)
        if cfg.debug_visualize_queue_size:
            visualize_action_queue_size(client.action_queue_size)
        client.logger.info("Client stopped")
    if client.failure:
        raise SystemExit(f"lerobot-aim-robot-client: {client.failure}")


@parser.wrap()
def robot_client(cfg: AIMRobotClientConfig) -> None:
    run_client(cfg)


def main() -> None:
    from lerobot.utils.import_utils import register_third_party_plugins

    register_third_party_plugins()
    try:
        robot_client()
    except ServingConfigError as e:
        sys.exit(f"lerobot-aim-robot-client: error: {e}")


if __name__ == "__main__":
    main()
