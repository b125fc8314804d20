"""`transformers` backend: a Qwen2-VL / Qwen2.5-VL class model in-process, for CPU machines and tests.

Generation is constrained to the caption's JSON Schema with xgrammar, so even a small or
random model answers with parseable JSON. The image-token expansion is done here rather
than by the model's `AutoProcessor`, whose video half needs torchvision (not importable
with CPU torch): each image placeholder becomes `grid_t*grid_h*grid_w / merge**2` tokens.
"""
from __future__ import annotations

import io
import json
import threading

import torch
from PIL import Image

from datagen import UserError
from datagen.caption.request import BackendError, CaptionRequest, Sampling
from datagen.models.provenance import hub_revision, weights_revision

SUPPORTED = ("qwen2_vl", "qwen2_5_vl")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class TransformersVLM:
    def __init__(self, model: str, revision: str = "", device: str = "cpu", dtype: str = "float32",
                 section: str = "caption"):
        import xgrammar as xgr
        from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

        kw = {"revision": hub_revision(revision)} if hub_revision(revision) else {}
        try:
            config = AutoConfig.from_pretrained(model, **kw)
        except OSError as e:
            raise UserError(f"{section}.model {model!r}: cannot load ({e})") from None
        if config.model_type not in SUPPORTED:
            raise UserError(f"{section}.model {model!r} is a {config.model_type!r}; the transformers backend runs {SUPPORTED}")
        self.tokenizer = AutoTokenizer.from_pretrained(model, **kw)
        if self.tokenizer.chat_template is None:
            raise UserError(f"{section}.model {model!r}: its tokenizer has no chat template")
        self.image_processor = AutoImageProcessor.from_pretrained(model, **kw)
        self.model = AutoModelForImageTextToText.from_pretrained(model, dtype=DTYPES[dtype], **kw).to(device).eval()
        self.device = device
        self.image_token = self.tokenizer.convert_ids_to_tokens(config.image_token_id)
        self.merge = self.image_processor.merge_size
        self.model_id = model
        self.revision = weights_revision(model, revision, self.model)
        vocab_size = self.model.get_output_embeddings().weight.shape[0]  # may exceed len(tokenizer) (padding)
        info = xgr.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=vocab_size)
        self._compiler = xgr.GrammarCompiler(info)
        self._grammars: dict[str, object] = {}  # schema JSON -> compiled grammar (frames share sizes)
        self._xgr = xgr
        # One generate at a time: an actor with batches in flight shares this model, and the
        # seeded RNG of a sampled retry is process-wide.
        self._lock = threading.Lock()

    def _grammar(self, schema: dict):
        key = json.dumps(schema)  # not sorted: property order is the generation order
        if key not in self._grammars:
            # any_whitespace=False: a weak model could otherwise emit whitespace to the token limit
            self._grammars[key] = self._compiler.compile_json_schema(key, any_whitespace=False)
        return self._grammars[key]

    def _inputs(self, requests: list[CaptionRequest]) -> dict:
        images = [Image.open(io.BytesIO(im.jpeg)).convert("RGB") for r in requests for im in r.images]
        vision = self.image_processor(images=images, return_tensors="pt")
        tokens_per_image = iter((vision["image_grid_thw"].prod(-1) // self.merge**2).tolist())
        texts = []
        for r in requests:
            text = self.tokenizer.apply_chat_template(r.messages, tokenize=False, add_generation_prompt=True)
            parts = text.split(self.image_token)
            if len(parts) != len(r.images) + 1:
                raise BackendError(f"chat template rendered {len(parts) - 1} image slots for {len(r.images)} images")
            texts.append(parts[0] + "".join(self.image_token * next(tokens_per_image) + p for p in parts[1:]))
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
        return {**enc, "pixel_values": vision["pixel_values"].to(self.model.dtype), "image_grid_thw": vision["image_grid_thw"]}

    def generate(self, requests: list[CaptionRequest], sampling: Sampling) -> list[str | BackendError]:
        with self._lock:
            return self._generate_batch(requests, sampling)

    def _generate_batch(self, requests: list[CaptionRequest], sampling: Sampling) -> list[str | BackendError]:
        if sampling.temperature > 0 and len(requests) > 1:
            # One RNG stream per row, so a sampled answer does not depend on its batch-mates
            # (vLLM seeds each request the same way); sampled retries are rare, so unbatched.
            return [answer for r in requests for answer in self._generate([r], sampling)]
        return self._generate(requests, sampling)

    def _generate(self, requests: list[CaptionRequest], sampling: Sampling) -> list[str]:
        inputs = {k: v.to(self.device) for k, v in self._inputs(requests).items()}
        grammar = self._xgr.contrib.hf.LogitsProcessor([self._grammar(r.schema) for r in requests])
        torch.manual_seed(sampling.seed)
        sample = sampling.temperature > 0
        with torch.inference_mode():
            out = self.model.generate(
                **inputs, max_new_tokens=sampling.max_new_tokens, do_sample=sample,
                temperature=sampling.temperature if sample else None, top_p=None, top_k=None,
                logits_processor=[grammar], pad_token_id=self.tokenizer.pad_token_id,
            )
        new_tokens = out[:, inputs["input_ids"].shape[1]:]
        return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
