"""benchmarks.memory against PyTorch's own accounting: the bytes it reads per weight are what the
memory profiler files as weights, gradients and optimizer state."""

import torch

from benchmarks.memory import LatentLoss, build, lerobot_update
from lerobot_aim import load_preset

NARROW = dict(num_attention_heads=2, ffn_dim=512, action_width=64, action_ffn_dim=128, device="cpu")


def test_what_lerobot_train_keeps_is_what_the_profiler_sees():
    config = load_preset("aim_wan22_5b", num_layers=1, **NARROW)
    torch.manual_seed(0)
    kept = lerobot_update(LatentLoss(build(config, 4), 4), config, profile=True)
    peaks = kept["peaks"]
    # Within a few scalars (AdamW's step counters, the loss scale) of the tensors' own byte counts.
    for category, kind in (("parameter", "weights"), ("gradient", "grads"), ("optimizer_state", "optimizer")):
        assert abs(peaks[category] - sum(kept[kind].values())) < 4096, (category, peaks, kept[kind])
    # lerobot-train on a bf16 preset: bf16 weights, gradients and both AdamW moments (2 + 2 + 4 bytes).
    bf16 = {k: kept[k]["torch.bfloat16"] / kept["numel"]["torch.bfloat16"] for k in ("weights", "grads")}
    assert bf16 == {"weights": 2.0, "grads": 2.0}
    assert 4.0 <= kept["optimizer"]["torch.bfloat16"] / kept["numel"]["torch.bfloat16"] < 4.01
