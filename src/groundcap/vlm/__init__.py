"""Vision-language models behind one small interface, whichever way they are served.

``chat.ChatEngine`` takes a batch of ``ChatRequest`` (a prompt plus images) and returns one
``ChatReply`` per request. Engines: ``vllm`` (offline ``vllm.LLM`` batching, the throughput path),
``openai`` (any OpenAI-compatible chat endpoint: ``vllm serve``, Gemini, ...), ``transformers``
(``generate`` fallback). ``structured`` turns replies into validated JSON with bounded retries.
"""
