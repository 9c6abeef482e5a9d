from types import SimpleNamespace
from unittest import mock

import pytest
import torch
from diffusers import WanPipeline
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import AutoTokenizer, PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

from lerobot_aim.model.text_encoders import (
    MiniLMTextEncoder,
    TextEncoder,
    UMT5TextEncoder,
    make_text_encoder,
)

INSTRUCTIONS = ["pick up the red cube", "open the  drawer"]


@pytest.fixture(scope="module")
def minilm():
    return make_text_encoder("minilm", None, 16, torch.float32)


@pytest.fixture(scope="module")
def tiny_umt5_dir(tmp_path_factory):
    """A random UMT5 encoder and a word-level tokenizer (pad 0, "</s>" appended) in the Wan pipeline layout."""
    path = tmp_path_factory.mktemp("wan_pipeline")
    words = sorted({word for text in INSTRUCTIONS + ["close the door"] for word in text.split()})
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2} | {word: i + 3 for i, word in enumerate(words)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    ).save_pretrained(path / "tokenizer")
    torch.manual_seed(0)
    config = UMT5Config(
        vocab_size=len(vocab),
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
    )
    UMT5EncoderModel(config).save_pretrained(path / "text_encoder")
    return path


def wan_prompt_embeds(encoder: TextEncoder, texts: list[str]) -> torch.Tensor:
    """What diffusers' WanPipeline gives for the same tokenizer and model."""
    pipe = SimpleNamespace(
        tokenizer=encoder.tokenizer, text_encoder=encoder.model, _execution_device=encoder.device
    )
    with torch.no_grad():
        return WanPipeline._get_t5_prompt_embeds(pipe, texts, max_sequence_length=encoder.max_length)


def test_minilm_encodes_offline(minilm):
    embeds = minilm(INSTRUCTIONS)
    assert (minilm.dim, minilm.max_length) == (384, 16)
    assert embeds.shape == (2, 16, 384)
    assert not embeds.requires_grad
    num_tokens = minilm.tokenizer(INSTRUCTIONS, padding="max_length", max_length=16).attention_mask
    for embed, mask in zip(embeds, torch.tensor(num_tokens), strict=True):
        assert (embed[mask == 0] == 0).all()
        assert (embed[mask == 1] != 0).any(dim=-1).all()
    torch.testing.assert_close(embeds, wan_prompt_embeds(minilm, INSTRUCTIONS))


def test_minilm_is_frozen(minilm):
    minilm.train()
    assert not minilm.training and not minilm.model.training
    assert not any(p.requires_grad for p in minilm.parameters())


def test_cache_skips_repeated_instructions(minilm):
    encoder = TextEncoder(minilm.model, minilm.tokenizer, max_length=8, cache_size=2)
    with mock.patch.object(encoder.model, "forward", wraps=encoder.model.forward) as forward:
        first = encoder(["a", "b", "a"])
        assert forward.call_count == 1 and forward.call_args.kwargs["input_ids"].shape[0] == 2
        torch.testing.assert_close(encoder(["b", "a"]), first[[1, 0]], rtol=0, atol=0)
        assert forward.call_count == 1
        encoder(["c"])  # evicts "b", the least recently used
        assert forward.call_count == 2 and list(encoder._cache) == ["a", "c"]
        encoder(["a"])
        assert forward.call_count == 2
    encoder.to("cpu")
    assert not encoder._cache


def test_minilm_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"expected a transformers folder of sentence-transformers"):
        MiniLMTextEncoder.from_pretrained(tmp_path / "missing")


def test_umt5_loads_wan_layout(tiny_umt5_dir):
    encoder = make_text_encoder("umt5", str(tiny_umt5_dir), 8, torch.float32)
    assert isinstance(encoder, UMT5TextEncoder)
    embeds = encoder(INSTRUCTIONS)
    assert embeds.shape == (2, 8, 32)
    assert (embeds[0, 6:] == 0).all() and (embeds[1, 4:] == 0).all()  # 5 and 3 words, then "</s>"
    torch.testing.assert_close(embeds, wan_prompt_embeds(encoder, INSTRUCTIONS))


def test_umt5_loads_plain_folder(tiny_umt5_dir, tmp_path):
    UMT5EncoderModel.from_pretrained(tiny_umt5_dir / "text_encoder").save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(tiny_umt5_dir / "tokenizer").save_pretrained(tmp_path)
    encoder = UMT5TextEncoder.from_pretrained(tmp_path)
    assert encoder.max_length == 512
    assert encoder(["close the door"]).shape == (1, 512, 32)


def test_umt5_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"No UMT5 encoder in .*text_encoder/ subfolder"):
        UMT5TextEncoder.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"does not exist.*--policy.text_encoder_path"):
        make_text_encoder("umt5", str(tmp_path / "missing"), 8, torch.float32)
    with pytest.raises(ValueError, match="'minilm', 'umt5'"):
        make_text_encoder("clip", None, 8, torch.float32)
