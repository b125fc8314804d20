"""A tiny random Qwen2-VL with an offline tokenizer, saved like a hub checkpoint.

Tests and the CPU demo load it through the same code path as Qwen/Qwen2.5-VL-7B-Instruct:
`from_pretrained(dir)` of the model, tokenizer and image processor. Its outputs are random
text; the caption stage's grammar-constrained decoding still makes them valid JSON.
"""
from __future__ import annotations

from pathlib import Path

# Qwen2-VL's special tokens, in the order Qwen's tokenizer gives them ids after the vocab.
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]

# Qwen2-VL's chat template, trimmed to text and image parts (what the caption stage sends).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] in ('image', 'image_url') %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Training text: the byte-level alphabet already covers every string; these merges just
# make JSON and caption words a few tokens long, so tiny generations stay short.
_CORPUS = [
    '{"caption_a": "a person stands in a room", "caption_b": "the person sits", '
    '"instruction": "make the person sit down", "edit_type": "pose", '
    '"objects": [{"name": "person", "box": [12, 30, 200, 310]}]}',
    "add remove move pose attribute viewpoint lighting background other",
    "Describe frame A, describe frame B, list the differences, then one instruction.",
    "0 1 2 3 4 5 6 7 8 9 10 100 128 256 320 480 640 [ ] { } , : \"",
]


def build_tokenizer(vocab_size: int = 512):
    """A byte-level BPE tokenizer with Qwen2-VL's special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_CORPUS * 4, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE, padding_side="left",
    )


def build_tiny_vlm(out_dir: str | Path, seed: int = 0) -> str:
    """Build and save a random Qwen2-VL (2+2 layers, hidden 64) with tokenizer and image processor."""
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl import Qwen2VLImageProcessorPil

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
            # head_dim 32 (vLLM's CPU attention kernels need >= 32) -> 16 rotary frequencies over (t, h, w)
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},
            bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(depth=2, embed_dim=32, num_heads=2, hidden_size=64, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    # Small pixel budget: a 640x480 frame becomes ~12x9 patches, so CPU tests stay fast.
    Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=224 * 224).save_pretrained(out)
    return str(out)
