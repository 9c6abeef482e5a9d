"""Serving AIM (or any LeRobot policy) to LeRobot's async ``robot_client``, safely.

- :mod:`~lerobot_aim.serving.policy_server`: ``lerobot-aim-policy-server`` (start, stop, CLI);
- :mod:`~lerobot_aim.serving.servicer`: its RPCs (LeRobot's ``PolicyServer`` made safe);
- :mod:`~lerobot_aim.serving.episode`: a client's observations and actions by env step, so that a
  served AIM plans from the context ``select_action`` would see;
- :mod:`~lerobot_aim.serving.robot_client`: ``lerobot-aim-robot-client`` (every step's observation,
  token, TLS);
- :mod:`~lerobot_aim.serving.configs`: the server's and the client's configs;
- :mod:`~lerobot_aim.serving.channel`: TLS credentials and the token, for both ends;
- :mod:`~lerobot_aim.serving.checkpoints`: the checkpoints a server loads at start-up;
- :mod:`~lerobot_aim.serving.robot_inputs`: checks of a robot's announced features and observations;
- :mod:`~lerobot_aim.serving.streams`: bounded reception of chunked observations;
- :mod:`~lerobot_aim.serving.safe_pickle` and :mod:`~lerobot_aim.serving.messages`: the allow-list
  unpickler and the checked protocol messages;
- :mod:`~lerobot_aim.serving.sim_robot`: ``--robot.type=aim_sim``, a robot without hardware.

Submodules are imported on use: LeRobot's async modules set up logging (and a ``logs/`` folder in
the working directory) when imported.
"""

from lerobot_aim.serving.sim_robot import AIMSimRobot, AIMSimRobotConfig

__all__ = ["AIMSimRobot", "AIMSimRobotConfig"]
