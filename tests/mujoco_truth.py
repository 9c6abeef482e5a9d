"""MuJoCo's own renders of a recorded MetaWorld episode: the truth that value-map tests compare with.

A stored episode is replayed: the env is reset with the episode's seed and the stored actions are
executed again (MuJoCo is deterministic); the replay must give back the stored ``observation.state``
at every step. At the steps asked for, MuJoCo renders each camera (``mujoco.Renderer``, shadows and
reflections off):

- in RGB, to find how a dataset stores that camera's images: the one of the 8 flips and rotations of
  the square image that matches the stored frames best (:func:`stored_orientation`). Nothing here
  reads the project's flip table or calibration code;
- in segmentation (``enable_segmentation_rendering``: object ids per pixel), things alone (every other
  geom and site hidden: a value map marks a region whether or not something is in front of it):
  the target object's geoms, posed as they are at another step (the step of the interaction the map
  points to); and the two fingertip sites whose midpoint is MetaWorld's tool-centre point
  (``env.tcp_center``), at :data:`FINGERTIP_SCALE` times the image size.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import mujoco
import numpy as np
from scipy.spatial import ConvexHull

from lerobot_aim.envs.metaworld_env import AIMMetaWorldEnv

ORIENTATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": lambda a: a,
    "flip_rows": lambda a: a[::-1],
    "flip_cols": lambda a: a[:, ::-1],
    "rotate_180": lambda a: a[::-1, ::-1],
    "transpose": lambda a: np.swapaxes(a, 0, 1),
    "rotate_90": lambda a: np.rot90(a, 1),
    "rotate_270": lambda a: np.rot90(a, 3),
    "anti_transpose": lambda a: np.rot90(np.swapaxes(a, 0, 1), 2),
}
"""The 8 ways a square (H, W, ...) image can be stored: flips, rotations and transposes."""

HIDDEN_GROUP = 5  # geom / site group that holds what is rendered alone while everything else is hidden
FINGERTIP_SITES = ("leftEndEffector", "rightEndEffector")  # MetaWorld: tcp_center is their midpoint
FINGERTIP_SCALE = 4  # the fingertip spheres (1 cm) are a pixel or less at 64 px: render them larger


@dataclass
class ReplayedStep:
    """MuJoCo's renders at one step of a replayed episode (per camera name, (H, W) as rendered)."""

    step: int
    rgb: dict[str, np.ndarray] = field(default_factory=dict)  # (H, W, 3) uint8, the whole scene
    target: dict[str, np.ndarray] = field(default_factory=dict)  # (H, W) bool: the target alone, posed
    # (S*H, S*W) bool, S = FINGERTIP_SCALE: both fingertips' pixels (None when one does not show)
    fingertips: dict[str, np.ndarray | None] = field(default_factory=dict)
    observation: dict[str, np.ndarray] = field(default_factory=dict)  # (H, W, 3) uint8, the env's images
    info: dict = field(default_factory=dict)  # the env's info at this step


def replay_episode(
    task: str,
    seed: int,
    actions: np.ndarray,
    states: np.ndarray,
    cameras: dict[str, str],
    size: int,
    steps: list[int],
    target_body: str,
    pose_step: Callable[[int], int],
) -> list[ReplayedStep]:
    """Replay a stored episode and render ``steps`` (see module doc).

    Args:
        task, seed: the episode's MetaWorld task and reset seed.
        actions: (T, 4) the stored actions; ``states``: (T, 4) the stored ``observation.state``.
        cameras: output camera name -> MuJoCo camera name.
        size: image height and width.
        steps: frame indices to render.
        target_body: the MuJoCo body of the object the value maps point at.
        pose_step: frame index -> the frame whose pose of ``target_body`` is rendered at that frame.
    """
    env = AIMMetaWorldEnv(
        task,
        cameras=[f"{name}:{camera}" for name, camera in cameras.items()],
        obs_type="agent_pos",
        observation_height=size,
        observation_width=size,
        episode_length=len(actions) + 1,
        terminate_on_success=False,
    )
    try:
        poses = []  # per frame: (geom_xpos, geom_xmat) of the target's geoms
        for _ in _replay(env, seed, actions, states):
            model, data = env.unwrapped_metaworld.model, env.unwrapped_metaworld.data
            geoms = _body_geoms(model, target_body)
            poses.append((data.geom_xpos[geoms].copy(), data.geom_xmat[geoms].copy()))
        renderer = _renderer(model, size)
        large = _renderer(model, FINGERTIP_SCALE * size)
        large.enable_segmentation_rendering()
        target_geoms = _body_geoms(model, target_body)
        fingertips = np.array([model.site(name).id for name in FINGERTIP_SITES])
        only_hidden_group = mujoco.MjvOption()
        only_hidden_group.geomgroup[:] = 0
        only_hidden_group.sitegroup[:] = 0
        only_hidden_group.geomgroup[HIDDEN_GROUP] = 1
        only_hidden_group.sitegroup[HIDDEN_GROUP] = 1
        wanted = set(steps)
        out = []
        try:
            for t, info in _replay(env, seed, actions, states):
                if t not in wanted:
                    continue
                data = env.unwrapped_metaworld.data
                rendered = ReplayedStep(t, info=info, observation=env.render_cameras())
                for name, camera in cameras.items():
                    renderer.disable_segmentation_rendering()
                    renderer.update_scene(data, camera=camera)
                    rendered.rgb[name] = renderer.render().copy()
                    renderer.enable_segmentation_rendering()
                    rendered.target[name] = _render_posed(
                        renderer, model, data, camera, target_geoms, poses[pose_step(t)], only_hidden_group
                    )
                    rendered.fingertips[name] = _render_sites(
                        large, model, data, camera, fingertips, only_hidden_group
                    )
                out.append(rendered)
        finally:
            renderer.close()
            large.close()
        return out
    finally:
        env.close()


def _replay(env: AIMMetaWorldEnv, seed: int, actions: np.ndarray, states: np.ndarray):
    """Yield (frame index, info) along the replay, checking the state against the stored one."""
    obs, info = env.reset(seed=seed)
    for t in range(len(actions)):
        np.testing.assert_allclose(obs["agent_pos"], states[t], atol=1e-5, err_msg=f"replay left frame {t}")
        yield t, info
        obs, _, _, _, info = env.step(actions[t])


@contextlib.contextmanager
def _alone(model, geoms=(), sites=()):
    """Put ``geoms`` and ``sites`` in :data:`HIDDEN_GROUP` and every other geom and site in group 0."""
    geom_groups, site_groups = model.geom_group.copy(), model.site_group.copy()
    try:
        model.geom_group[:] = 0
        model.site_group[:] = 0
        model.geom_group[np.asarray(geoms, dtype=np.int64)] = HIDDEN_GROUP
        model.site_group[np.asarray(sites, dtype=np.int64)] = HIDDEN_GROUP
        yield
    finally:
        model.geom_group[:] = geom_groups
        model.site_group[:] = site_groups


def _render_posed(renderer, model, data, camera, geoms, pose, option) -> np.ndarray:
    """Segmentation of ``geoms`` alone, placed at ``pose`` (the step's camera, the scene untouched)."""
    xpos, xmat = data.geom_xpos[geoms].copy(), data.geom_xmat[geoms].copy()
    try:
        data.geom_xpos[geoms], data.geom_xmat[geoms] = pose
        with _alone(model, geoms=geoms):
            renderer.update_scene(data, camera=camera, scene_option=option)
            segmentation = renderer.render()
    finally:
        data.geom_xpos[geoms], data.geom_xmat[geoms] = xpos, xmat
    return _object_pixels(segmentation, mujoco.mjtObj.mjOBJ_GEOM, geoms)


def _render_sites(renderer, model, data, camera, sites, option) -> np.ndarray | None:
    """(H, W) bool: the pixels of ``sites`` rendered alone; None unless every site shows."""
    with _alone(model, sites=sites):
        renderer.update_scene(data, camera=camera, scene_option=option)
        segmentation = renderer.render()
    masks = [_object_pixels(segmentation, mujoco.mjtObj.mjOBJ_SITE, [site]) for site in sites]
    return np.any(masks, axis=0) if all(mask.any() for mask in masks) else None


def _renderer(model, size: int):
    model.vis.global_.offwidth = max(model.vis.global_.offwidth, size)
    model.vis.global_.offheight = max(model.vis.global_.offheight, size)
    renderer = mujoco.Renderer(model, size, size)
    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
    return renderer


def _object_pixels(segmentation: np.ndarray, kind, ids) -> np.ndarray:
    """(H, W) bool: pixels of a segmentation render ((H, W, 2): object id, object type) on objects
    ``ids`` of type ``kind`` (``mujoco.mjtObj``)."""
    return (segmentation[..., 1] == int(kind)) & np.isin(segmentation[..., 0], ids)


def _body_geoms(model, body: str) -> np.ndarray:
    return np.flatnonzero(model.geom_bodyid == model.body(body).id)


def stored_orientation(rendered: list[np.ndarray], stored: list[np.ndarray]) -> tuple[str, dict[str, float]]:
    """The orientation (key of :data:`ORIENTATIONS`) under which MuJoCo's renders best match stored frames.

    Args:
        rendered: (H, W, 3) renders; ``stored``: the (H, W, 3) frames a dataset or env gives for them.
    Returns:
        The best orientation and the mean absolute difference (0-255) of every orientation.
    """
    errors = {
        name: float(
            np.mean(
                [
                    np.abs(orient(r).astype(np.float32) - s).mean()
                    for r, s in zip(rendered, stored, strict=True)
                ]
            )
        )
        for name, orient in ORIENTATIONS.items()
    }
    return min(errors, key=errors.get), errors


def distance_to_mask(mask: np.ndarray, row: float, col: float) -> float:
    """Pixels from (row, col) to the nearest True pixel of ``mask`` (inf when it has none)."""
    rows, cols = np.nonzero(mask)
    if not len(rows):
        return float("inf")
    return float(np.min(np.hypot(rows - row, cols - col)))


def distance_to_hull(mask: np.ndarray, row: float, col: float) -> float:
    """Pixels from (row, col) to the convex hull of the True pixels of ``mask``; 0 inside it."""
    points = np.argwhere(mask).astype(np.float64)
    hull = ConvexHull(points, qhull_options="QJ")
    point = np.array([row, col])
    if np.all(hull.equations[:, :2] @ point + hull.equations[:, 2] <= 1e-9):
        return 0.0
    corners = points[hull.vertices]
    starts, ends = corners, np.roll(corners, -1, axis=0)
    along = np.clip(
        np.sum((point - starts) * (ends - starts), axis=1) / np.sum((ends - starts) ** 2, axis=1), 0, 1
    )
    return float(np.min(np.linalg.norm(starts + along[:, None] * (ends - starts) - point, axis=1)))


def hull_mask(mask: np.ndarray, scale: int, margin: float = 1.0) -> np.ndarray:
    """(H/scale, W/scale) bool: pixels whose centre lies within ``margin`` pixels (of the small image) of
    the convex hull of the True pixels of ``mask`` (pixel centres on integers in both images)."""
    hull = ConvexHull(np.argwhere(mask).astype(np.float64), qhull_options="QJ")
    height, width = mask.shape[0] // scale, mask.shape[1] // scale
    rows, cols = np.mgrid[0:height, 0:width]
    centres = (np.stack([rows.ravel(), cols.ravel()], axis=1) + 0.5) * scale - 0.5
    inside = np.all(centres @ hull.equations[:, :2].T + hull.equations[:, 2] <= margin * scale, axis=1)
    return inside.reshape(height, width)
