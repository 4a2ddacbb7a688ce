"""vLLM jobs: batch inference over a conversations file (``ow.inference``) and temporary
OpenAI-compatible APIs (``ow.api``, ``ow.chat``).

``config`` holds the params (pydantic, no ML imports; the SDK validates with it at submit
and the workers read it back); ``inference`` and ``serve`` are the workers, run in the
vLLM worker environment (``openweights.images.WORKER_VLLM``).
"""
