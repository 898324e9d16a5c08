"""``VllmChat``: offline batching through ``vllm.LLM``, the throughput path on a GPU node.

vLLM is a GPU-only extra that CI never installs, so it is imported (and the model loaded) on the
first ``generate``; the request and output plumbing lives in pure functions tests run without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from groundcap.errors import BackendUnavailable, is_fatal
from groundcap.vlm.chat import ChatEngine, ChatReply, ChatRequest, brief, openai_messages


def build_conversations(requests: Sequence[ChatRequest], max_image_side: int = 1024) -> list[list[dict[str, Any]]]:
    """One OpenAI-style conversation per request, images as data URLs, the form ``LLM.chat`` takes."""
    return [openai_messages(req, "jpeg", max_image_side) for req in requests]


def sampling_kwargs(request: ChatRequest, seed: int = 0) -> dict[str, Any]:
    """``SamplingParams`` arguments; the fixed seed keeps sampled (temperature > 0) runs reproducible."""
    return {"temperature": request.temperature, "max_tokens": request.max_tokens, "seed": seed}


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
    """vLLM is not installed here (it runs on GPU nodes)."""


class VllmChat(ChatEngine):
    """A model loaded in-process by vLLM; requests with equal sampling settings share one batch."""

    kind = "vllm"

    def __init__(
        self,
        model: str,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int = 8192,
        max_num_seqs: int = 64,
        limit_images_per_prompt: int = 2,
        seed: int = 0,
        trust_remote_code: bool = True,  # InternVL and other VLMs ship their own model code
        dtype: str = "auto",
        max_image_side: int = 1024,
        chat_template_kwargs: dict[str, Any] | None = None,
        progress: bool = False,
    ) -> None:
        super().__init__(model)
        self.llm_kwargs: dict[str, Any] = {
            "tensor_parallel_size": tensor_parallel_size,
            "gpu_memory_utilization": gpu_memory_utilization,
            "max_model_len": max_model_len,
            "max_num_seqs": max_num_seqs,
            "limit_mm_per_prompt": {"image": limit_images_per_prompt},
            "seed": seed,
            "trust_remote_code": trust_remote_code,
            "dtype": dtype,
        }
        self.seed = seed
        self.max_image_side = max_image_side
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.progress = progress
        self._llm: Any = None
        self._sampling_params: Any = None  # vllm.SamplingParams, bound when the model loads

    def generate(self, requests: list[ChatRequest]) -> list[ChatReply]:
        if not requests:
            return []
        llm = self._load()
        groups: dict[tuple[tuple[str, Any], ...], list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(tuple(sorted(sampling_kwargs(req, self.seed).items())), []).append(i)
        replies: dict[int, ChatReply] = {}
        for key, indices in groups.items():
            batch = self._chat(llm, [requests[i] for i in indices], self._sampling_params(**dict(key)))
            replies.update(zip(indices, batch, strict=True))
        return [replies[i] for i in range(len(requests))]

    def _load(self) -> Any:
        """The ``vllm.LLM``, built on first use so constructing the engine needs no GPU or vLLM."""
        if self._llm is None:
            try:
                import vllm
            except ImportError as exc:
                raise VllmMissing("the 'vllm' engine needs vLLM on a GPU node: pip install 'groundcap[gpu]'") from exc
            self._llm = vllm.LLM(model=self.model, **self.llm_kwargs)
            self._sampling_params = vllm.SamplingParams
        return self._llm

    def close(self) -> None:
        """Free the model's memory before the next stage loads its own (``groundcap.models.release``):
        ``LLM.shutdown`` where this vLLM has it (the engine core process), then vLLM's own
        ``cleanup_dist_env_and_memory`` (process groups, ``gc``, the CUDA cache)."""
        llm, self._llm = self._llm, None
        if llm is None:
            return
        shutdown = getattr(llm, "shutdown", None)
        if callable(shutdown):
            shutdown()
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
