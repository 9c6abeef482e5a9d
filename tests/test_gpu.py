"""CUDA checks (``pytest -m gpu``; skipped without a GPU): compiled FlexAttention against SDPA, bf16
chunks and the context cache on CUDA, a full-width block in bf16. Run by ``benchmarks.gpu_check``."""

import pytest
import torch

from benchmarks.chunk_latency import inputs
from benchmarks.memory import LatentLoss, build
from lerobot_aim import load_preset
from lerobot_aim.model import ChunkSchedule, sample_chunk

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
CUDA = torch.device("cuda")


def _forward(model, context, noise):
    sigma = torch.full((noise.rgb.shape[0],), 0.5, device=CUDA)
    return model(context, noise, sigma, sigma)


def test_compiled_flex_attention_matches_sdpa_on_cuda(tiny_config):
    tiny_config.attention_backend = "sdpa"
    model = build(tiny_config, 4, device=CUDA).eval()
    context, noise = inputs(tiny_config, 4, 2, 3, CUDA, torch.float32)
    with torch.no_grad():
        sdpa = _forward(model, context, noise)
        model.config.attention_backend = "flex"  # compiled FlexAttention on CUDA (mot._flex_attention)
        flex = _forward(model, context, noise)
    for a, b in ((sdpa.rgb, flex.rgb), (sdpa.value, flex.value), (sdpa.actions, flex.actions)):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4)


def test_bf16_chunks_on_cuda_are_finite_and_the_cache_changes_nothing(tiny_config):
    tiny_config.dtype = "bfloat16"
    model = build(tiny_config, 4, device=CUDA).eval()
    context, noise = inputs(tiny_config, 4, 2, 3, CUDA, torch.bfloat16)
    schedule = ChunkSchedule(4, 4, tiny_config.video_infer_shift, tiny_config.action_infer_shift)
    cached, uncached = (sample_chunk(model, context, noise, schedule, c)[0] for c in (True, False))
    for a, b in (
        (cached.rgb, uncached.rgb),
        (cached.value, uncached.value),
        (cached.actions, uncached.actions),
    ):
        assert torch.isfinite(a.float()).all()
        torch.testing.assert_close(a.float(), b.float(), rtol=0.05, atol=0.05)


def test_a_full_width_layer_trains_in_bf16_on_cuda():
    config = load_preset("aim_wan22_5b", num_layers=1, device="cuda")
    module = LatentLoss(build(config, 14, device=CUDA), 14)
    loss, _ = module()
    loss.backward()
    grads = [p.grad for p in module.parameters() if p.requires_grad]
    assert torch.isfinite(loss) and all(g is not None and torch.isfinite(g.float()).all() for g in grads)
