"""What a built-in worker says when it cannot go on: a reason a person can act on, on
the run's output and as an ``{"type": "error"}`` event, instead of a traceback as the only
message. Errors nobody foresaw keep their traceback (they are bugs to report).
:func:`run_worker` is every built-in worker's ``main``: params in, work, failure out."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel

from openweights.jobs.params import load_params
from openweights.jobs.unsloth.report import Reporter, reporter_for

__all__ = ["EXIT_FAILED", "reason_for", "report_failure", "run_worker"]

C = TypeVar("C", bound=BaseModel)

EXIT_FAILED = 2


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    try:
        import torch
    except ImportError:
        return False
    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return isinstance(exc, oom) or (isinstance(exc, RuntimeError) and
                                    "out of memory" in str(exc).lower())


def reason_for(exc: BaseException) -> str | None:
    """The reason to report for ``exc``; None for an unforeseen error."""
    from pydantic import ValidationError

    from openweights.errors import OpenWeightsError

    if _is_oom(exc):
        where = "GPU" if "cuda" in str(exc).lower() or "gpu" in str(exc).lower() else "memory"
        return (f"out of memory ({where}): {str(exc).splitlines()[0][:300] or type(exc).__name__}"
                " — use a smaller per_device_train_batch_size or max_seq_length, "
                "load_in_4bit=True, or a machine with more memory (requires_vram_gb / "
                "allowed_hardware)")
    if isinstance(exc, OpenWeightsError):
        advice = exc.advice()
        return f"{exc}" + (f" ({advice})" if advice else "")
    if isinstance(exc, ValidationError):
        return f"the job's params are invalid: {exc}"
    if isinstance(exc, ValueError | FileNotFoundError):
        return str(exc)
    return None


def report_failure(reporter: Reporter | None, exc: BaseException) -> int:
    """Say why the run fails (re-raising an unforeseen error); the exit status."""
    reason = reason_for(exc)
    if reason is None:
        raise exc
    print(f"openweights: the job failed: {reason}", file=sys.stderr, flush=True)
    if reporter is not None:
        event: dict[str, Any] = {"type": "error", "error": reason,
                                 "exception": type(exc).__name__}
        try:
            reporter.log(event)
        except Exception as log_exc:  # the reason is on the output already
            print(f"openweights: could not log the error: {log_exc}", file=sys.stderr)
    return EXIT_FAILED


def run_worker(config: type[C], work: Callable[[C, str | None, Reporter], object],
               argv: list[str] | None = None,
               banner: Callable[[C], str] | None = None) -> int:
    """Run a built-in worker: ``worker [PARAMS.json|JOB_ID] [--local DIR]``. Loads the
    params as ``config``, prints ``banner(cfg)`` (the line tests and people wait for),
    calls ``work(cfg, job_id, reporter)`` and returns the exit status: an int ``work``
    returns, else 0; a foreseen failure is reported (:func:`report_failure`)."""
    reporter: Reporter | None = None
    try:
        reporter, source = reporter_for(sys.argv[1:] if argv is None else argv)
        cfg, job_id = load_params(config, source)
        if banner is not None:
            print(banner(cfg), flush=True)
        status = work(cfg, job_id, reporter)
        return status if isinstance(status, int) and not isinstance(status, bool) else 0
    except Exception as exc:
        return report_failure(reporter, exc)
    finally:
        if reporter is not None:
            reporter.close()
