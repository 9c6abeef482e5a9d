"""The configs of the data CLIs (``lerobot-aim-collect``, ``lerobot-aim-annotate``, the RoboTwin
converter), as LeRobot keeps its ``configs/`` beside its scripts: every flag, its default and what it
means, and the checks that need nothing but the flags themselves (raising
:class:`~lerobot_aim.data.errors.CollectError`, :class:`~lerobot_aim.data.errors.AnnotationError` or
:class:`~lerobot_aim.data.errors.ConvertError` with what to do). List flags are typed lists
(``--ee_slices=[[0,3],[8,11]]``), which draccus parses.
"""

from dataclasses import dataclass, field
from typing import Any

from lerobot_aim.asvm.events import SETTLE_SPEED, SETTLE_STEPS
from lerobot_aim.data import schema
from lerobot_aim.data.errors import AnnotationError, CollectError, ConvertError
from lerobot_aim.envs.configuration import DEFAULT_CAMERAS, parse_cameras
from lerobot_aim.envs.metaworld_tasks import resolve_tasks

COLLECT_COMMAND = "lerobot-aim-collect"
ROBOTWIN_COMMAND = "python -m lerobot_aim.data.robotwin"
SOURCES = ("poses", "contacts")
ROBOTWIN_CAMERAS = ("head_camera", "left_camera", "right_camera")  # RoboTwin 2.0's (and LeRobot's) names
ROBOTWIN_ACTION_MODES = ("joint", "ee")
ROBOTWIN_INSTRUCTIONS = ("task", "seen", "unseen")
PLACE_MODES = ("auto", "always", "never")
AFTER_LAST = ("last", "empty")
# Tasks whose goal is to carry an object somewhere and leave it there: after the expert's success the
# collector lowers the object onto its support and releases it, which gives the place event.
PLACE_TASKS = frozenset(
    {
        "assembly-v3",
        "bin-picking-v3",
        "box-close-v3",
        "pick-place-v3",
        "pick-place-wall-v3",
        "shelf-place-v3",
    }
)


@dataclass
class CollectConfig:
    # Repo id of the dataset written (also its name on the Hub with --push_to_hub=true).
    repo_id: str = "local/aim_metaworld"
    # Folder of the dataset (default: $HF_LEROBOT_HOME/<repo_id>).
    root: str | None = None
    # MetaWorld MT50 task(s): a task ("pick-place-v3"), a difficulty group (easy, medium, hard,
    # very_hard) or a comma-separated list of both, as --env.task of `--env.type=aim_metaworld`.
    task: str = "pick-place-v3"
    # Episodes to add per task. With --keep_failed=false, failed attempts are dropped and retried with
    # the next seed (at most --max_attempts attempts per task).
    num_episodes: int = 10
    # First seed of each task; attempt k of a task uses the k-th seed from here not used before in
    # the dataset (seeds set the object and goal positions).
    seed: int = 0
    # Height and width of every camera's images and value maps (even: yuv420p video).
    image_size: int = 128
    # "name:mujoco_camera" pairs, comma-separated; the first is the head camera.
    cameras: str = DEFAULT_CAMERAS
    # World radius of an interaction point, metres: the Gaussian's sigma is focal * radius / depth px.
    radius: float = 0.03
    # Steps the expert gets to succeed (MetaWorld's own limit is 500).
    max_steps: int = 500
    # Keep episodes where the expert failed within --max_steps (default: drop and log them).
    keep_failed: bool = False
    # Attempts per task at most (default: 2 x num_episodes + 2; failures are retried with new seeds).
    max_attempts: int | None = None
    # Steps recorded once the task is done: after the success, or after the placement has settled.
    steps_after_success: int = 10
    # Scripted placement after success (lower, release, wait until the object rests): "auto" (the
    # pick-and-place tasks of PLACE_TASKS), "always" (any task whose object is held at success), "never".
    place_after_success: str = "auto"
    # Steps the scripted placement may take at most (lowering, release and settling).
    max_place_steps: int = 120
    # Place event: centre-of-mass speed (m/s) below which a released object counts as still
    # (MetaWorld's puck creeps at about 0.025 m/s once put down). `lerobot-aim-annotate
    # --source=contacts` has the same default: pass it the same value to reproduce the maps.
    speed_threshold: float = SETTLE_SPEED
    # Place event: consecutive still steps that confirm a placement.
    settle_steps: int = SETTLE_STEPS
    # After the last event: "last" keeps showing its region, "empty" gives blank maps.
    after_last: str = "last"
    # Video codec of the images and value maps (h264, hevc, libsvtav1, ...).
    vcodec: str = "h264"
    # Video quality (lower is better and larger); value maps are training targets: keep it low.
    crf: int = 18
    # Encoder speed preset (codec-specific; None: the codec's default).
    preset: str | None = "fast"
    # Append to an existing dataset at --root (refuse to touch it with --resume=false).
    resume: bool = True
    # Push the dataset to the Hub as --repo_id when done.
    push_to_hub: bool = False
    # Make the pushed dataset private.
    private: bool = False

    def __post_init__(self) -> None:
        try:
            resolve_tasks(self.task)
            parse_cameras(self.cameras)
        except ValueError as error:
            raise CollectError(str(error)) from None
        if self.num_episodes < 0:
            raise CollectError(f"--num_episodes must be >= 0, got {self.num_episodes}.")
        if self.image_size <= 0 or self.image_size % 2:
            raise CollectError(f"--image_size must be a positive even number (video), got {self.image_size}.")
        if self.radius <= 0:
            raise CollectError(f"--radius must be > 0 (metres), got {self.radius}.")
        if self.max_steps < 1 or self.steps_after_success < 0 or self.max_place_steps < 1:
            raise CollectError("--max_steps and --max_place_steps must be >= 1, --steps_after_success >= 0.")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise CollectError(f"--max_attempts must be >= 1, got {self.max_attempts}.")
        if self.place_after_success not in PLACE_MODES:
            raise CollectError(
                f"--place_after_success must be one of {PLACE_MODES}, got {self.place_after_success!r}."
            )
        if self.after_last not in AFTER_LAST:
            raise CollectError(f"--after_last must be one of {AFTER_LAST}, got {self.after_last!r}.")
        if self.speed_threshold <= 0 or self.settle_steps < 1:
            raise CollectError("--speed_threshold must be > 0 and --settle_steps >= 1.")

    @property
    def tasks(self) -> list[str]:
        """Task names in order, each once."""
        names: list[str] = []
        for group in resolve_tasks(self.task).values():
            names += [t for t in group if t not in names]
        return names

    @property
    def attempts_per_task(self) -> int:
        if self.keep_failed:
            return self.num_episodes
        return self.max_attempts if self.max_attempts is not None else 2 * self.num_episodes + 2

    def places(self, task: str) -> bool:
        """Whether a held object is put down after the success of ``task``."""
        mode = self.place_after_success
        return mode == "always" or (mode == "auto" and task in PLACE_TASKS)

    def map_settings(self) -> dict[str, Any]:
        """The settings that decide the value maps (must not change within a dataset)."""
        return {
            "radius": self.radius,
            "speed_threshold": self.speed_threshold,
            "settle_steps": self.settle_steps,
            "after_last": self.after_last,
            "object_half_height": 0.0,
        }


@dataclass
class AnnotateConfig:
    # Dataset to annotate: a Hub repo id, or any name when --root points to a local copy. Never modified.
    repo_id: str
    # Repo id of the annotated dataset that is written.
    output_repo_id: str
    # Local folder of the source dataset (default: $HF_LEROBOT_HOME/<repo_id>, downloaded if absent).
    root: str | None = None
    # Folder of the annotated dataset (default: $HF_LEROBOT_HOME/<output_repo_id>). Must not exist
    # unless --overwrite=true.
    output_root: str | None = None
    # Where the interaction events come from: "poses" (end-effector positions + gripper open/close,
    # real arms) or "contacts" (recorded contact signals, simulators).
    source: str = "poses"
    # Cameras to annotate, e.g. [front,wrist] (default: every camera of the dataset).
    cameras: list[str] | None = None
    # Head camera (full size in AIM's T-pose canvas; default: a camera named like head/high/top,
    # else the first one).
    head_camera: str | None = None
    # World radius of an interaction point, metres: the Gaussian's sigma is focal * radius / depth pixels.
    radius: float = 0.03
    # After an arm's last event: "last" keeps showing its region, "empty" drops it from the maps.
    after_last: str = "last"

    # Feature holding the end-effector (tool-centre) xyz of every arm, world frame, metres
    # (default: observation.ee_position). Needed by --source=poses.
    ee_key: str | None = None
    # Which dims of --ee_key are each arm's xyz: [start, stop] per arm, e.g. [[0,3],[8,11]].
    # Default: consecutive triples of the whole feature.
    ee_slices: list[list[int]] | None = None
    # Feature holding each arm's gripper state (default: observation.gripper_closed, 1 = closed).
    gripper_key: str | None = None
    # Dims of --gripper_key holding each arm's gripper value, one per arm, e.g. [7,15].
    # Default: every dim (one per arm).
    gripper_indices: list[int] | None = None
    # A gripper counts as closed when its value is above this threshold (below it with
    # --gripper_closed_is_low=true).
    gripper_closed_threshold: float = 0.5
    # Set to true when low gripper values mean closed (e.g. an opening width; RoboTwin: 1 = open).
    gripper_closed_is_low: bool = False
    # --source=poses from joint positions: the robot's URDF, or one per arm ([left.urdf,right.urdf]);
    # the end-effector positions are computed by forward kinematics (MuJoCo) instead of read (--ee_key).
    fk_urdf: list[str] | None = None
    # With --fk_urdf: the link whose origin is each arm's tool-centre point, one per arm, e.g. [gripperframe].
    fk_frame: list[str] | None = None
    # With --fk_urdf: feature holding the joint positions (default: observation.state).
    joint_key: str | None = None
    # With --fk_urdf: the dims of --joint_key feeding each arm's chain (the joints from the URDF root to
    # --fk_frame, in that order), [start, stop] per arm, e.g. [[0,5],[6,11]]. Default: the first dims.
    joint_slices: list[list[int]] | None = None
    # With --fk_urdf: unit of revolute joint positions, "rad" or "deg" (LeRobot's SO and Koch arms: deg).
    joint_units: str = "rad"
    # With --fk_urdf: world pose of each URDF root (the frame of the camera extrinsics), per arm
    # [x,y,z] or [x,y,z,qx,qy,qz,qw], e.g. [[0,0.3,0],[0,-0.3,0]]. Default: the URDF root is the world frame.
    fk_base_pose: list[list[float]] | None = None
    # Camera calibration: "dataset" (per-step observation.camera.<cam>.intrinsics/.extrinsics
    # columns) or a YAML file of fixed cameras (cameras it does not list still use dataset columns).
    calibration: str = "dataset"

    # --source=contacts: per-pad gripper-object contact flags (n_arms * pads).
    pad_contact_key: str = schema.PAD_CONTACT
    # --source=contacts: the target object's centre of mass (3, or 3 per arm).
    object_position_key: str = schema.OBJECT_POSITION
    # --source=contacts: gripper-object contact points (NaN-padded); used when the dataset has it.
    contact_points_key: str = schema.CONTACT_POINTS
    # --source=contacts: object-support contact points (NaN-padded); used when the dataset has it.
    support_points_key: str = schema.SUPPORT_POINTS
    # --source=contacts: centre-of-mass height above the object's base, metres (place region
    # without support points).
    object_half_height: float = 0.0
    # --source=contacts: speed (m/s) below which a released object counts as still (as lerobot-aim-collect).
    speed_threshold: float = SETTLE_SPEED
    # --source=contacts: consecutive still steps that confirm a placement.
    settle_steps: int = SETTLE_STEPS

    # Write <output_root>/contact_sheets/episode_XXXX.png: frames with value maps overlaid, a row per camera.
    contact_sheets: bool = False
    # Frames per camera row in a contact sheet (evenly spaced over the episode).
    contact_sheet_frames: int = 8
    # Integer upscaling of contact-sheet tiles (for tiny images).
    contact_sheet_scale: int = 1
    # Video codec of the output's videos (all are re-encoded): h264, hevc, libsvtav1, ...
    vcodec: str = "h264"
    # Quality of the re-encoded videos (lower is better and larger).
    crf: int = 18
    # Encoder speed preset (codec-specific; None: the codec's default).
    preset: str | None = "fast"
    # Video decoding backend of the source (torchcodec or pyav; default: LeRobot's choice).
    video_backend: str | None = None
    # Threads writing frames to disk before encoding (0: in the main thread).
    image_writer_threads: int = 4
    # Replace an existing output dataset.
    overwrite: bool = False
    # Push the annotated dataset to the Hub as --output_repo_id.
    push_to_hub: bool = False
    # Make the pushed dataset private.
    private: bool = False
    # License written in the dataset card.
    license: str = "apache-2.0"

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise AnnotationError(f"--source must be one of {SOURCES}, got {self.source!r}.")
        if self.after_last not in AFTER_LAST:
            raise AnnotationError(f"--after_last must be 'last' or 'empty', got {self.after_last!r}.")
        if self.radius <= 0:
            raise AnnotationError(f"--radius must be > 0 (metres), got {self.radius}.")
        if self.contact_sheet_frames < 1 or self.contact_sheet_scale < 1:
            raise AnnotationError("--contact_sheet_frames and --contact_sheet_scale must be >= 1.")
        if self.fk_urdf:
            if self.source != "poses" or self.ee_key or self.ee_slices:
                raise AnnotationError(
                    "--fk_urdf computes the end-effector positions of --source=poses from joint positions: "
                    "use it with --source=poses and without --ee_key / --ee_slices."
                )
            if not self.fk_frame:
                raise AnnotationError(
                    "--fk_urdf needs --fk_frame=[<link>, ...]: the URDF link at each arm's tool-centre point "
                    "(one per arm), e.g. --fk_frame=[gripper_frame_link]."
                )
            if self.joint_units not in ("rad", "deg"):
                raise AnnotationError(f"--joint_units must be 'rad' or 'deg', got {self.joint_units!r}.")

        for flag, pairs in (("--ee_slices", self.ee_slices), ("--joint_slices", self.joint_slices)):
            bad = [p for p in pairs or [] if len(p) != 2 or not 0 <= p[0] < p[1]]
            if bad:
                raise AnnotationError(
                    f"{flag}: {bad} are not [start, stop] pairs (0 <= start < stop), one per arm, e.g. "
                    f"{flag}=[[0,3],[8,11]]."
                )
        bad_poses = [p for p in self.fk_base_pose or [] if len(p) not in (3, 7)]
        if bad_poses:
            raise AnnotationError(
                f"--fk_base_pose: {bad_poses} must be [x,y,z] or [x,y,z,qx,qy,qz,qw] per arm, e.g. "
                "--fk_base_pose=[[0,0.3,0],[0,-0.3,0]]."
            )


@dataclass
class RobotwinConvertConfig:
    # RoboTwin's data/<task>/<task_config> folder (it holds data/episode<i>.hdf5 and instructions/).
    raw_dir: str
    # Repo id of the LeRobotDataset written.
    repo_id: str
    # Folder of the dataset written (default: $HF_LEROBOT_HOME/<repo_id>); must not exist.
    root: str | None = None
    # Task name (default: the name of raw_dir's parent folder); the task string is it with spaces.
    task_name: str | None = None
    # "joint": the next step's 14 joint targets as action (RoboTwin's convention); "ee": the next
    # end-effector pose relative to the episode's first one (16).
    action_mode: str = "joint"
    # Task string: "task" (the task name), or the episode's first "seen" / "unseen" instruction.
    instruction: str = "task"
    # Cameras to convert, e.g. [head_camera,left_camera].
    cameras: list[str] = field(default_factory=lambda: list(ROBOTWIN_CAMERAS))
    # Convert the first episodes only.
    max_episodes: int | None = None
    # Video codec of the camera videos.
    vcodec: str = "h264"

    def __post_init__(self) -> None:
        if self.action_mode not in ROBOTWIN_ACTION_MODES:
            raise ConvertError(
                f"--action_mode must be one of {ROBOTWIN_ACTION_MODES}, got {self.action_mode!r}."
            )
        if self.instruction not in ROBOTWIN_INSTRUCTIONS:
            raise ConvertError(
                f"--instruction must be one of {ROBOTWIN_INSTRUCTIONS}, got {self.instruction!r}."
            )
        unknown = [c for c in self.cameras if c not in ROBOTWIN_CAMERAS]
        if unknown or not self.cameras:
            raise ConvertError(
                f"--cameras: {unknown or 'none'} given; RoboTwin records {list(ROBOTWIN_CAMERAS)}."
            )
        if self.max_episodes is not None and self.max_episodes < 1:
            raise ConvertError(f"--max_episodes must be >= 1, got {self.max_episodes}.")
