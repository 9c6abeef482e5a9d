import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_5b_preset_rgb_stream_has_wan22_ti2v_5b_parameter_count():
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.param_count", "--preset=aim_wan22_5b"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    counts = json.loads(out.stdout.strip().splitlines()[-1])
    assert counts["rgb"] == 4_999_787_712  # diffusers' WanTransformer3DModel, Wan2.2-TI2V-5B config
    assert counts["action"] < counts["value"] <= counts["rgb"]
