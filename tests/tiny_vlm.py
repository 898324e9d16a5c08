"""A tiny random-weight LLaVA (CLIP vision tower + Llama) saved locally: no model hub in tests.

LLaVA is the simplest image-text-to-text model the Auto classes load: its processor resizes every
image to one square, accepts text-only prompts, and needs nothing beyond a tokenizer with an
``<image>`` token and a chat template. A byte-level BPE with no merges encodes any prompt.
"""

from __future__ import annotations

from pathlib import Path

IMAGE_SIDE = 32
PATCH = 8  # (32 / 8)^2 = 16 image tokens per image
SPECIALS = ["<pad>", "<s>", "</s>", "<image>"]

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}{{ message['role'] }}: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def byte_level_bpe(specials: list[str]):
    """A ``tokenizers`` byte-level BPE over the 256 byte symbols with no merges, ``specials`` first: it
    encodes any text, one token a byte (the tiny VLMs' tokenizers are built on it)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    backend = Tokenizer(models.BPE(vocab={tok: i for i, tok in enumerate(specials + sorted(alphabet))}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return backend


def build_tokenizer():
    """LLaVA's: the byte-level BPE with its special tokens first (ids 0-3)."""
    from transformers import PreTrainedTokenizerFast

    backend = byte_level_bpe(SPECIALS)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
        extra_special_tokens={"image_token": "<image>"},
    )


def build_tiny_vlm(folder: str | Path) -> Path:
    """Save a ~45k-parameter LLaVA and its processor into ``folder``; return the folder."""
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

    folder = Path(folder)
    tokenizer = build_tokenizer()
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIALS}
    vision = CLIPVisionConfig(
        image_size=IMAGE_SIDE, patch_size=PATCH, hidden_size=16, intermediate_size=32,
        num_hidden_layers=2, num_attention_heads=2, projection_dim=16,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        pad_token_id=ids["<pad>"], bos_token_id=ids["<s>"], eos_token_id=ids["</s>"],
        initializer_range=0.5,  # spread logits apart so greedy argmax is stable across batch shapes
    )
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=ids["<image>"],
        image_seq_length=(IMAGE_SIDE // PATCH) ** 2, vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = ids["<pad>"]
    model.generation_config.eos_token_id = ids["</s>"]
    model.save_pretrained(folder)

    image_processor = LlavaImageProcessorPil(
        size={"shortest_edge": IMAGE_SIDE}, crop_size={"height": IMAGE_SIDE, "width": IMAGE_SIDE},
    )
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH,
        vision_feature_select_strategy="default", num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(folder)
    return folder
