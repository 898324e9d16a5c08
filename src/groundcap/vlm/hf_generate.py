"""Engine ``transformers``: ``model.generate`` on any image-text-to-text checkpoint.

The fallback where vLLM is missing (CPU, CI) or lacks the model: slower (static batches, no paged
attention) but it runs whatever ``AutoModelForImageTextToText`` loads (Qwen2.5-VL, InternVL "-hf",
LLaVA, ...). torch and transformers are imported on first use so the package imports without them.
``json_mode`` is not enforced here (no constrained decoding): ``structured`` validates and retries.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from groundcap.errors import EngineStartFailed
from groundcap.models import hub
from groundcap.vlm.chat import ChatEngine, ChatReply, ChatRequest, brief, to_image


class TransformersChat(ChatEngine):
    """Batches of up to ``batch_size`` requests sharing (max_tokens, temperature), left-padded.

    device/dtype "auto": cuda + bfloat16 when a GPU is visible, else cpu + float32. ``seed`` is set
    before every ``generate`` call, so sampled replies repeat for the same batches.
    """

    kind = "transformers"

    def __init__(self, model: str, device: str = "auto", dtype: str = "auto", batch_size: int = 4,
                 max_image_side: int = 1024, trust_remote_code: bool = False, seed: int = 0) -> None:
        super().__init__(model)
        self.device, self.dtype = device, dtype
        self.batch_size = max(1, int(batch_size))
        self.max_image_side = max_image_side
        self.trust_remote_code = trust_remote_code
        self.seed = seed
        self._processor: Any = None
        self._model: Any = None

    def _load(self) -> None:
        """Load processor and model once, on the first ``generate`` (building the engine stays cheap); a load
        that fails raises ``EngineStartFailed``, which stops the stage (``worker``)."""
        if self._model is not None:
            return
        from transformers import AutoModelForImageTextToText, AutoProcessor

        device = hub.resolve_device(self.device)
        dtype = hub.resolve_dtype(self.dtype, device, gpu_default="bfloat16")  # VLMs are trained in bf16
        try:
            processor = AutoProcessor.from_pretrained(self.model, trust_remote_code=self.trust_remote_code)
            model = AutoModelForImageTextToText.from_pretrained(
                self.model, dtype=dtype, trust_remote_code=self.trust_remote_code)
        except Exception as exc:  # missing or broken files: no request could be served, and each would load again
            raise EngineStartFailed(f"transformers could not load {self.model}: {type(exc).__name__}: "
                                    f"{brief(str(exc), 1000)}") from exc
        processor.tokenizer.padding_side = "left"  # decoder-only: new tokens must follow every prompt
        self._model, self._processor = model.to(device), processor  # device_map would need accelerate
        # recent transformers take processor options in ``processor_kwargs`` (flat ones warn); 5.0 took them flat
        flat = "processor_kwargs" not in inspect.signature(processor.apply_chat_template).parameters
        self._padding = {"padding": True} if flat else {"processor_kwargs": {"padding": True}}
        tok = processor.tokenizer
        eos = model.generation_config.eos_token_id
        ends = {*(eos if isinstance(eos, list) else [eos]), tok.eos_token_id, model.generation_config.pad_token_id}
        self._ends = {i for i in ends if i is not None}  # pad follows a row that stopped early

    def generate(self, requests: list[ChatRequest]) -> list[ChatReply]:
        self._load()
        replies: dict[int, ChatReply] = {}
        for batch in self._batches(requests):
            replies.update(zip(batch, self._run([requests[i] for i in batch]), strict=True))
        return [replies[i] for i in range(len(requests))]

    def _batches(self, requests: list[ChatRequest]) -> list[list[int]]:
        """Request indices grouped by (max_tokens, temperature), in order, cut to ``batch_size``."""
        groups: dict[tuple[int, float], list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault((req.max_tokens, req.temperature), []).append(i)
        size = self.batch_size
        return [idx[s:s + size] for idx in groups.values() for s in range(0, len(idx), size)]

    def _run(self, batch: list[ChatRequest]) -> list[ChatReply]:
        """One batch; if it fails, each request alone, so one bad request costs only its own reply."""
        try:
            return self._generate(batch)
        except Exception as exc:  # noqa: BLE001 - any failure becomes that request's error
            if len(batch) == 1:
                return [ChatReply(error=f"{type(exc).__name__}: {exc}")]
        return [self._run([req])[0] for req in batch]

    def _generate(self, batch: list[ChatRequest]) -> list[ChatReply]:
        import torch

        inputs = self._processor.apply_chat_template(
            [self._messages(req) for req in batch], add_generation_prompt=True, tokenize=True,
            return_dict=True, return_tensors="pt", **self._padding,
        ).to(self._model.device, dtype=self._model.dtype)
        max_tokens, temperature = batch[0].max_tokens, batch[0].temperature
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        torch.manual_seed(self.seed)
        out = self._model.generate(**inputs, max_new_tokens=max_tokens, **sampling)
        new = out[:, inputs["input_ids"].shape[1]:].tolist()
        prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()
        return [self._reply(tokens, n, max_tokens) for tokens, n in zip(new, prompt_tokens, strict=True)]

    def _reply(self, tokens: list[int], prompt_tokens: int, max_tokens: int) -> ChatReply:
        stop = next((i for i, t in enumerate(tokens) if t in self._ends), None)
        kept = tokens if stop is None else tokens[:stop]
        return ChatReply(
            text=self._processor.tokenizer.decode(kept, skip_special_tokens=True),
            truncated=stop is None and len(tokens) >= max_tokens,
            usage={"prompt_tokens": int(prompt_tokens), "completion_tokens": len(kept) + (stop is not None)},
        )

    def _messages(self, req: ChatRequest) -> list[dict[str, Any]]:
        """The request in the chat-template message format: images first, then the prompt."""
        content: list[dict[str, Any]] = [{"type": "image", "image": self._image(a)} for a in req.images]
        content.append({"type": "text", "text": req.prompt})
        system = [{"role": "system", "content": [{"type": "text", "text": req.system}]}] if req.system else []
        return [*system, {"role": "user", "content": content}]

    def _image(self, array: np.ndarray):
        if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8 or 0 in array.shape:
            raise ValueError(f"image of shape {array.shape} and dtype {array.dtype}; expected HxWx3 uint8")
        return to_image(array, self.max_image_side)
