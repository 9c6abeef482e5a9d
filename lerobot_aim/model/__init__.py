"""The AIM network: three streams (RGB, value map, action) joined by intent-causal attention."""

from lerobot_aim.model.attention_mask import Group, dense_mask, flex_block_mask, rule_table
from lerobot_aim.model.codecs import LatentCodec, PixelPatchCodec, WanVAECodec, make_codec
from lerobot_aim.model.context_cache import ContextKVStore
from lerobot_aim.model.mot import AIMTransformer, Context, KVCache, Prediction
from lerobot_aim.model.sampling import ActionTrajectory, ChunkSchedule, sample_chunk, trajectory_log_probs
from lerobot_aim.model.text_encoders import TextEncoder, make_text_encoder
from lerobot_aim.model.wan_stream import WanRGBStream

__all__ = [
    "AIMTransformer",
    "ActionTrajectory",
    "ChunkSchedule",
    "Context",
    "ContextKVStore",
    "KVCache",
    "Group",
    "LatentCodec",
    "PixelPatchCodec",
    "Prediction",
    "TextEncoder",
    "WanRGBStream",
    "WanVAECodec",
    "dense_mask",
    "flex_block_mask",
    "make_codec",
    "make_text_encoder",
    "rule_table",
    "sample_chunk",
    "trajectory_log_probs",
]
