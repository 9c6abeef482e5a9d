"""Shared by the benchmark scripts: the machine a result came from, and where results go."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

import torch

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
