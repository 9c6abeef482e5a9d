"""Shared by the benchmark scripts: the machine a result came from, where results go, and the checks of
the settings they share (a refused setting is an :class:`InputError`, printed as one line by
:func:`lerobot_aim.cli.run_command`)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

import torch

from lerobot_aim.cli import InputError
from lerobot_aim.configuration_aim import preset_path

RESULTS = Path(__file__).parent / "results"


def machine() -> dict:
    info = {
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    try:
        info["commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=RESULTS.parent
        ).stdout.strip()
    except OSError:
        info["commit"] = None
    return info


def device_tag(device: str) -> str:
    return torch.cuda.get_device_name().replace(" ", "_") if device == "cuda" else f"cpu{os.cpu_count()}"


def write(name: str, result: dict, table: str, results: Path = RESULTS) -> Path:
    """Write ``<name>.json`` (with the machine and date) and ``<name>.md`` under ``results``."""
    results.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M:%S"), **result}
    (results / f"{name}.json").write_text(json.dumps(result, indent=2))
    header = f"# {name}\n\nMachine: {result['machine']}\nDate: {result['date']}\n\n"
    path = results / f"{name}.md"
    path.write_text(header + table + "\n")
    return path


class BenchmarkInputError(InputError):
    """A benchmark setting that cannot work, with what to pass instead."""


def check_preset(name: str, choices: list[str] | None = None) -> None:
    """Refuse a ``--preset`` without a config file under ``configs/`` (or outside ``choices``)."""
    if choices is not None and name not in choices:
        raise BenchmarkInputError(f"--preset={name}: this benchmark runs one of {', '.join(choices)}.")
    try:
        preset_path(name)
    except ValueError as error:
        raise BenchmarkInputError(f"--preset={name}: {error}") from None


def check_device(device: str) -> None:
    """Refuse a ``--device`` other than cpu or cuda, and cuda where there is none."""
    if device not in ("cpu", "cuda"):
        raise BenchmarkInputError(f"--device={device}: pass --device=cpu or --device=cuda.")
    if device == "cuda" and not torch.cuda.is_available():
        raise BenchmarkInputError("--device=cuda: no CUDA device here; pass --device=cpu.")


def check_at_least_one(**settings: int) -> None:
    """Refuse counts (steps, repeats, episodes, ...) below 1, naming each flag."""
    bad = [f"--{name}={value}" for name, value in settings.items() if value < 1]
    if bad:
        raise BenchmarkInputError(f"{', '.join(bad)}: must be at least 1.")


def mean_interval(values: torch.Tensor) -> tuple[float, tuple[float, float]]:
    """Mean of values (per frame, per episode) and its 95% normal interval (1.96 standard errors; NaN
    with one value)."""
    mean = values.mean().item()
    half = 1.96 * values.std().item() / len(values) ** 0.5 if len(values) > 1 else float("nan")
    return mean, (mean - half, mean + half)
