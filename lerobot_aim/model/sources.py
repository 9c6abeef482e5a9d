"""Where a pretrained component comes from: a local folder, a local pipeline folder, or a Hub id.

Wan2.2 ships as one diffusers pipeline (``Wan-AI/Wan2.2-TI2V-5B-Diffusers``) whose components sit in
subfolders (``transformer/``, ``vae/``, ``text_encoder/``, ``tokenizer/``). Every loader of the
project accepts the component's own folder, a pipeline folder that holds it, or a Hub id, and
:func:`resolve_component` is the one place that tells them apart.
"""

from __future__ import annotations

import os
from pathlib import Path

PIPELINE_ID = "Wan-AI/Wan2.2-TI2V-5B-Diffusers"


def resolve_component(
    path_or_repo_id: str | os.PathLike, subfolder: str, what: str, flag: str, marker: str = "config.json"
) -> tuple[str, str | None]:
    """``(source, subfolder)`` to hand to ``from_pretrained`` for one component.

    Args:
        path_or_repo_id: a local folder (the component's, or a pipeline's with ``subfolder`` in it)
            or a Hub id (a pipeline's: the component is read from ``subfolder``).
        subfolder: the component's subfolder in a pipeline (e.g. "vae").
        what: the component, as the user knows it (e.g. "Wan2.2 VAE (AutoencoderKLWan)").
        flag: the option that set the path (e.g. "--policy.codec_path").
        marker: a file the component's folder holds.

    Raises:
        FileNotFoundError: a local folder without the component, or a local path that does not exist,
            with what was expected and how to get it.
    """
    local = Path(path_or_repo_id).expanduser()
    download = (
        f"Download it, e.g. `hf download {PIPELINE_ID} --include '{subfolder}/*' --local-dir <dir>`, "
        f"and point {flag} to <dir>."
    )
    if local.is_dir():
        if (local / subfolder / marker).is_file():
            return str(local), subfolder
        if (local / marker).is_file():
            return str(local), None
        raise FileNotFoundError(
            f"No {what} in {local}: expected its folder ({marker} and weights) or a pipeline folder with a "
            f"{subfolder}/ subfolder (the {PIPELINE_ID} layout). {download}"
        )
    if local.is_absolute() or str(path_or_repo_id).startswith((".", "~")) or str(path_or_repo_id).count("/") > 1:
        raise FileNotFoundError(
            f"The {what} folder {local} does not exist. Fix {flag}, or give a Hub id such as "
            f"'{PIPELINE_ID}'. {download}"
        )
    return str(path_or_repo_id), subfolder
