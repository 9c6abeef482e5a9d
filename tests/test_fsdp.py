"""Sharded training: lerobot-train under accelerate's FSDP2 on two CPU processes, against DDP; both
signatures of ``_save_pretrained``."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lerobot_aim.data.synthetic import make_synthetic_dataset
from lerobot_aim.modeling_aim import AIMPolicy
from tests.conftest import with_one_camera

ROOT = Path(__file__).resolve().parents[1]
REPO_ID = "local/aim_fsdp"
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch"]
FSDP2_CPU_CONFIG = """\
compute_environment: LOCAL_MACHINE
distributed_type: FSDP
num_machines: 1
num_processes: 2
mixed_precision: 'no'
use_cpu: true
fsdp_config:
  fsdp_version: 2
  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP
  fsdp_transformer_layer_cls_to_wrap: {wrap}
  fsdp_reshard_after_forward: true
  fsdp_state_dict_type: FULL_STATE_DICT
  fsdp_cpu_ram_efficient_loading: false
  fsdp_offload_params: false
"""


def _train_args(dataset_root, output_dir):
    return [
        f"--config_path={ROOT / 'configs' / 'aim_tiny.json'}",
        f"--dataset.repo_id={REPO_ID}",
        f"--dataset.root={dataset_root}",
        f"--output_dir={output_dir}",
        "--steps=2",
        "--batch_size=4",
        "--num_workers=0",
        "--log_freq=1",
        "--save_freq=1000",
        "--policy.num_layers=2",
        "--policy.push_to_hub=false",
        "--wandb.enable=false",
    ]


def _run(cmd) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout + result.stderr


def _losses(log: str) -> list[float]:
    return [float(x) for x in re.findall(r"step:\d+ .*? loss:([0-9.]+)", log)]


@pytest.mark.slow
def test_fsdp2_training_shards_the_policy_and_matches_ddp(tmp_path):
    dataset_root = tmp_path / "data"
    make_synthetic_dataset(dataset_root, repo_id=REPO_ID, num_episodes=4, episode_length=40)
    config = tmp_path / "fsdp2.yaml"
    config.write_text(FSDP2_CPU_CONFIG.format(wrap=",".join(AIMPolicy._fsdp_wrap_modules)))

    ddp_launch = [
        *LAUNCH,
        "--multi_gpu",
        "--num_processes=2",
        "--num_machines=1",
        "--mixed_precision=no",
        "--dynamo_backend=no",
        "--main_process_port=29561",
        "-m",
        "lerobot.scripts.lerobot_train",
    ]
    fsdp_launch = [
        *LAUNCH,
        f"--config_file={config}",
        "--main_process_port=29562",
        str(ROOT / "tests" / "fsdp_train.py"),
    ]
    ddp = _run([*ddp_launch, *_train_args(dataset_root, tmp_path / "ddp")])
    fsdp = _run([*fsdp_launch, *_train_args(dataset_root, tmp_path / "fsdp")])

    held = [int(n) for n in re.findall(r"FSDP2 rank \d holds (\d+) of", fsdp)]
    total = int(re.search(r"holds \d+ of (\d+) parameters", fsdp).group(1))
    assert len(held) == 2 and sum(held) == total and max(held) < 0.51 * total, (held, total)
    # Same data, same seeds: the sharded run is the DDP run (loss per step, updated weights).
    assert _losses(fsdp) == _losses(ddp) and len(_losses(ddp)) == 2
    assert all(loss == loss and loss < 1e3 for loss in _losses(fsdp))
    last = "checkpoints/last/pretrained_model/model.safetensors"
    ddp_weights, fsdp_weights = load_file(tmp_path / "ddp" / last), load_file(tmp_path / "fsdp" / last)
    assert ddp_weights.keys() == fsdp_weights.keys()
    for key, value in ddp_weights.items():
        assert fsdp_weights[key].dtype == value.dtype, key
        torch.testing.assert_close(fsdp_weights[key], value, rtol=1e-4, atol=1e-5, msg=key)
    assert (tmp_path / "fsdp" / "checkpoints/last/training_state/optimizer_state.safetensors").is_file()
    AIMPolicy.from_pretrained(tmp_path / "fsdp" / "checkpoints/last/pretrained_model", strict=True)


def test_save_pretrained_takes_both_lerobot_signatures_and_keeps_the_dtypes(tiny_config, tmp_path):
    """0.6.1 passes a gathered state dict (FSDP's fp32 masters); main calls _save_pretrained(dir)."""
    config = with_one_camera(tiny_config)
    config.dtype = "bfloat16"
    policy = AIMPolicy(config)
    own = policy.state_dict()
    for folder in ("main", "v061"):
        (tmp_path / folder).mkdir()
    policy._save_pretrained(tmp_path / "main")
    upcast = {key: value.float() for key, value in own.items()}
    policy._save_pretrained(tmp_path / "v061", state_dict=upcast)
    for folder in ("main", "v061"):
        saved = load_file(tmp_path / folder / "model.safetensors")
        assert saved.keys() == own.keys()
        for key, value in own.items():
            assert saved[key].dtype == value.dtype, (folder, key)
            assert torch.equal(saved[key], value), (folder, key)
    assert {v.dtype for v in own.values()} == {torch.bfloat16, torch.float32}
    reloaded = AIMPolicy.from_pretrained(tmp_path / "v061", strict=True)
    assert all(torch.equal(reloaded.state_dict()[k], v) for k, v in own.items())


def test_a_frozen_rgb_stream_gets_no_gradient_and_no_optimizer_state(tiny_config):
    config = with_one_camera(tiny_config)
    config.freeze_rgb_stream = True
    policy = AIMPolicy(config)
    trained = {id(p) for p in policy.get_optim_params()}
    assert not any(id(p) in trained or p.requires_grad for p in policy.model.rgb.parameters())
    assert all(
        id(p) in trained for name in ("value", "action") for p in getattr(policy.model, name).parameters()
    )
