"""A tiny random-weight InternVL in the Hugging Face format (``InternVLForConditionalGeneration``, the
``-hf`` checkpoints' code path), saved locally for vLLM's real engine in the tests (recipe: DESIGN.md).

The tokenizer is ``tiny_qwen_vl``'s byte-level BPE with InternVL's image tokens, declared under the names
the processor reads them by; InternVL's chat format is Qwen's (``<|im_start|>role ... <|im_end|>``) with
``<IMG_CONTEXT>`` for an image, which the processor expands to ``<img>`` + 4 context tokens + ``</img>``.
The eos is ``<|endoftext|>``, as in InternVL's own checkpoints: the turn end must come from stop ids.
"""

from __future__ import annotations

from pathlib import Path

IMAGE_TOKENS = ["<img>", "</img>", "<IMG_CONTEXT>", "<video>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] in ('image', 'image_url') %}<IMG_CONTEXT>\n"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_internvl(folder: str | Path) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (
        GotOcr2ImageProcessor,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        InternVLVideoProcessor,
        PreTrainedTokenizerFast,
    )

    from tiny_qwen_vl import SPECIALS

    folder = Path(folder)
    specials = SPECIALS[:3] + IMAGE_TOKENS  # <|endoftext|> <|im_start|> <|im_end|> and the image tokens
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    backend = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(specials + sorted(alphabet))}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
        extra_special_tokens={"start_image_token": "<img>", "end_image_token": "</img>",
                              "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = CHAT_TEMPLATE
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = InternVLConfig(
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                           image_size=[56, 56], patch_size=[14, 14]),
        text_config=dict(model_type="qwen2", vocab_size=512, hidden_size=128, intermediate_size=256,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         bos_token_id=eos, eos_token_id=eos, pad_token_id=eos),
        image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"), image_seq_length=4, downsample_ratio=0.5,
    )
    torch.manual_seed(0)
    model = InternVLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = eos
    model.save_pretrained(folder)
    processor = InternVLProcessor(
        image_processor=GotOcr2ImageProcessor(size={"height": 56, "width": 56}, crop_to_patches=False),
        tokenizer=tokenizer, video_processor=InternVLVideoProcessor(), image_seq_length=4,
        chat_template=CHAT_TEMPLATE)
    processor.save_pretrained(folder)
    return folder
