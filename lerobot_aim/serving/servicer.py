"""The RPCs of ``lerobot-aim-policy-server``: LeRobot's ``PolicyServer`` made safe, with AIM's history.

``Ready``, the observation queue and its filter are LeRobot's. Replaced:

- ``SendPolicyInstructions`` and ``SendObservations`` decode client bytes with the allow-list
  unpickler (:mod:`.messages`), check them (:mod:`.robot_inputs`), serve only checkpoints loaded at
  start-up, and receive observations within bounds (:mod:`.streams`);
- every observation a client sends is filed by env step (:mod:`.episode`), so that a served AIM plans
  from the frames and executed actions a local ``select_action`` loop would (LeRobot's server calls
  ``predict_action_chunk`` on planning observations only);
- ``GetActions`` answers an error the client sees (instead of an empty reply it waits on forever)
  when inference fails, and never sends a non-finite action.
"""

import contextlib
import os
import pickle  # nosec: only dumps the server's own action chunks
import threading
import time
from queue import Empty
from typing import NoReturn

import grpc
import torch
from lerobot.async_inference.helpers import TimedAction, TimedObservation, raw_observation_to_observation
from lerobot.async_inference.policy_server import PolicyServer
from lerobot.processor import NormalizerProcessorStep, TransitionKey, create_transition
from lerobot.transport import services_pb2  # type: ignore
from torch import Tensor

from lerobot_aim.history import ContextHistory
from lerobot_aim.processor_aim import OBS_RGB_CANVAS
from lerobot_aim.serving.checkpoints import ServedPolicy
from lerobot_aim.serving.configs import AIMPolicyServerConfig, ServingConfigError
from lerobot_aim.serving.episode import HISTORY_ONLY, ServedEpisode
from lerobot_aim.serving.messages import UnsafePayloadError, loads_instructions, loads_observation
from lerobot_aim.serving.robot_inputs import features_problem, observation_problem
from lerobot_aim.serving.streams import ObservationStreams, StreamRefused

MIB = 1024 * 1024


class NonFiniteActionsError(RuntimeError):
    """The policy produced NaN or infinite actions; they were not sent."""


class AIMPolicyServer(PolicyServer):
    """LeRobot's PolicyServer with server-chosen checkpoints, checked inputs and outputs, and AIM's
    history rebuilt from what the client sends."""

    def __init__(self, config: AIMPolicyServerConfig, policies: list[ServedPolicy]):
        super().__init__(config)
        if not policies:
            raise ServingConfigError("AIMPolicyServer needs at least one loaded checkpoint")
        self.served = list(policies)
        self.streams = ObservationStreams(
            config.max_observation_streams, int(config.max_payload_mb * MIB), config.stream_timeout_s
        )
        self.episode: ServedEpisode | None = None  # for a policy with a ContextHistory (AIM)
        self._normalizer: NormalizerProcessorStep | None = None
        self._inference_lock = threading.Lock()

    # -- helpers -------------------------------------------------------------------------------
    @property
    def served_paths(self) -> list[str]:
        return [p.path for p in self.served]

    def _find_served(self, requested: str) -> ServedPolicy | None:
        names = {requested}
        with contextlib.suppress(OSError, ValueError):
            names.add(os.path.realpath(os.path.expanduser(requested)))
        return next((p for p in self.served if names & p.aliases), None)

    def _refuse(self, context, code: grpc.StatusCode, what: str, reason: str) -> NoReturn:
        """Log the refusal with the client's address and end the call with ``code`` (abort raises)."""
        self.logger.error(f"Refused {what} from {context.peer()}: {reason}")
        context.abort(code, f"{what} refused: {reason}")
        raise AssertionError("grpc context.abort returned")  # pragma: no cover

    def _action_dim(self) -> int | None:
        action = self.policy.config.output_features.get("action")
        return action.shape[-1] if action is not None else None

    def _prepare(self, observation_t: TimedObservation) -> dict:
        """The policy's input batch of a raw observation (LeRobot's conversion, then the preprocessor)."""
        observation = raw_observation_to_observation(
            observation_t.get_observation(), self.lerobot_features, self.policy_image_features
        )
        return self.preprocessor(observation)

    def _frame_of(self, observation_t: TimedObservation) -> Tensor:
        """(1, 3, H, W) packed frame of a raw observation, as the policy's preprocessor makes it."""
        return self._prepare(observation_t)[OBS_RGB_CANVAS]

    def _normalise(self, action: Tensor) -> Tensor:
        """(A,) action as the robot ran it -> (1, A) normalised as the policy's actions are."""
        action = action[None].to(self.device)
        if self._normalizer is None:
            return action
        return self._normalizer(create_transition(action=action))[TransitionKey.ACTION]

    # -- RPCs ----------------------------------------------------------------------------------
    def SendPolicyInstructions(self, request, context):  # noqa: N802
        if not self.running:
            self.logger.warning("Server is not running. Ignoring policy instructions.")
            return services_pb2.Empty()
        what = "policy instructions"
        try:
            spec = loads_instructions(request.data)
        except UnsafePayloadError as e:
            self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, what, str(e))

        served = self._find_served(spec.pretrained_name_or_path)
        if served is None:
            reason = (
                "this server does not load checkpoints chosen by clients; "
                f"{spec.pretrained_name_or_path!r} is not served (served: {self.served_paths})"
            )
            self._refuse(context, grpc.StatusCode.PERMISSION_DENIED, what, reason)
        if spec.policy_type != served.policy_type:
            reason = (
                f"policy type {spec.policy_type!r} requested, "
                f"but {served.path!r} is a {served.policy_type!r} policy"
            )
            self._refuse(context, grpc.StatusCode.PERMISSION_DENIED, what, reason)
        if not 0 < spec.actions_per_chunk <= 100_000:
            self._refuse(
                context, grpc.StatusCode.INVALID_ARGUMENT, what, "actions_per_chunk must be in 1..100000"
            )
        if problem := features_problem(served.policy.config, served.policy_type, spec.lerobot_features):
            self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, what, problem)
        if spec.device != served.device:
            self.logger.info(f"Client asked for device {spec.device!r}; the server runs on {served.device!r}")

        if spec.rename_map:
            try:
                preprocessor, postprocessor = served.make_processors(spec.rename_map)
            except Exception as e:  # a rename_map the saved pipeline cannot take
                self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, what, f"rename_map: {e}")
        else:
            preprocessor, postprocessor = served.preprocessor, served.postprocessor

        with self._inference_lock:
            self.device = served.device
            self.policy_type = served.policy_type
            self.lerobot_features = spec.lerobot_features
            self.actions_per_chunk = spec.actions_per_chunk
            self.policy = served.policy
            self.preprocessor, self.postprocessor = preprocessor, postprocessor
            self._normalizer = next(
                (s for s in preprocessor.steps if isinstance(s, NormalizerProcessorStep)), None
            )
            self.policy.reset()  # a new session: forget the previous client's history
            history = getattr(self.policy, "history", None)
            self.episode = (
                ServedEpisode(window=history.num_past_actions + spec.actions_per_chunk)
                if isinstance(history, ContextHistory)
                else None
            )
            self.last_processed_obs = None
        self.logger.info(
            f"Policy instructions from {context.peer()} | serving {served.path} ({served.policy_type}) on "
            f"{served.device} | actions per chunk: {spec.actions_per_chunk}"
        )
        return services_pb2.Empty()

    def SendObservations(self, request_iterator, context):  # noqa: N802
        what = "observation"
        if self.policy is None:
            self._refuse(context, grpc.StatusCode.FAILED_PRECONDITION, what, "send policy instructions first")
        receive_time = time.time()
        try:
            payload = self.streams.receive(request_iterator)
        except StreamRefused as e:
            if not context.is_active():
                self.logger.warning(f"Client {context.peer()} went away while sending an observation")
                return services_pb2.Empty()
            self._refuse(context, e.code, what, str(e))
        except grpc.RpcError as e:  # the client cancelled or disconnected mid-stream
            self.logger.warning(f"Client {context.peer()} went away while sending an observation: {e}")
            return services_pb2.Empty()
        try:
            timed_observation = loads_observation(payload)
        except UnsafePayloadError as e:
            self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, what, str(e))
        raw = timed_observation.get_observation()
        if problem := observation_problem(self.lerobot_features or {}, raw, self._action_dim()):
            self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, what, problem)

        fps_metrics = self.fps_tracker.calculate_fps_metrics(timed_observation.get_timestamp())
        self.logger.debug(
            f"Received observation #{timed_observation.get_timestep()} | "
            f"Avg FPS: {fps_metrics['avg_fps']:.2f} | "
            f"One-way latency: {(receive_time - timed_observation.get_timestamp()) * 1000:.2f}ms"
        )
        if (episode := self.episode) is not None:
            timed_observation.timestep = episode.receive(timed_observation)  # from now on, its env step
        if raw.get(HISTORY_ONLY, False):
            return services_pb2.Empty()
        try:
            enqueued = self._enqueue_observation(timed_observation)
        except Exception as e:  # LeRobot's similarity filter could not read it
            self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, what, f"unusable observation: {e}")
        if not enqueued:
            self.logger.debug(f"Observation #{timed_observation.get_timestep()} has been filtered out")
        return services_pb2.Empty()

    def GetActions(self, request, context):  # noqa: N802
        """LeRobot's GetActions (the chunk of the newest queued observation, empty after
        ``obs_queue_timeout`` without one), with failures answered as errors."""
        start = time.perf_counter()
        try:
            observation_t = self.observation_queue.get(timeout=self.config.obs_queue_timeout)
        except Empty:
            return services_pb2.Empty()
        timestep = observation_t.get_timestep()
        self.logger.info(f"Running inference for observation #{timestep} (must_go: {observation_t.must_go})")
        with self._predicted_timesteps_lock:
            self._predicted_timesteps.add(timestep)
        try:
            action_chunk = self._predict_action_chunk(observation_t)
        except NonFiniteActionsError as e:
            self._refuse(context, grpc.StatusCode.INTERNAL, "action chunk", str(e))
        except Exception as e:
            self.logger.exception(f"Inference failed on observation #{timestep}")
            context.abort(
                grpc.StatusCode.INTERNAL,
                f"inference failed on observation #{timestep}: {type(e).__name__}: {e}",
            )
        actions = services_pb2.Actions(data=pickle.dumps(action_chunk))
        self.logger.info(
            f"Action chunk #{timestep} generated in {(time.perf_counter() - start) * 1000:.2f}ms"
        )
        time.sleep(max(0.0, self.config.inference_latency - (time.perf_counter() - start)))
        return actions

    def _predict_action_chunk(self, observation_t: TimedObservation) -> list[TimedAction]:
        """LeRobot's pipeline (prepare, preprocess, ``predict_action_chunk``, postprocess per action),
        with the history made ready first and the chunk checked and filed after."""
        with self._inference_lock:  # instructions from a new client swap the policy atomically
            batch = self._prepare(observation_t)
            self.last_processed_obs = observation_t
            step = observation_t.get_timestep()
            if self.episode is not None:
                self.episode.prepare_history(self.policy.history, step, self._frame_of, self._normalise)
            normalised = self._get_action_chunk(batch)  # (1, n, A)
            actions = torch.stack(
                [self.postprocessor(normalised[:, i]) for i in range(normalised.shape[1])], 1
            )
            actions = actions.squeeze(0).detach().cpu()  # (n, A), as the robot runs them
            if not bool(torch.isfinite(actions).all()):
                raise NonFiniteActionsError(
                    f"the policy's actions for observation #{step} are not finite (NaN or inf), so none were "
                    "sent to the robot. Check the checkpoint's weights and normalisation statistics."
                )
            if self.episode is not None:
                self.episode.sent(step, actions, normalised)
        return self._time_action_chunk(observation_t.get_timestamp(), list(actions), step)
