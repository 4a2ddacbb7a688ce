"""Inspect AI's ``inspect eval`` options, parsed into ``inspect_ai.eval`` arguments.

The original appended the user's ``options`` string to a shell command as it was, so any
text ran on the worker. Here the string is split like a shell would (``shlex``, nothing
executed) and each option must be one of :data:`OPTIONS`, with a value of its type;
anything else is refused naming the option. The worker passes the result to
``inspect_ai.eval`` as keyword arguments: no shell and no command line is involved.

Pure Python: the SDK validates ``options`` at submit, the worker parses them again.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["OPTIONS", "InvalidOption", "parse_options"]


class InvalidOption(ValueError):
    """An option Inspect's eval does not take here, or a value of the wrong type."""


def _int(v: str) -> int:
    return int(v)


def _positive(v: str) -> int:
    n = int(v)
    if n <= 0:
        raise ValueError("must be a positive integer")
    return n


def _float(v: str) -> float:
    x = float(v)
    if x != x or x in (float("inf"), float("-inf")):
        raise ValueError("must be a finite number")
    return x


def _limit(v: str) -> int | list[int]:
    """``N`` (the first N samples) or ``A-B`` (samples A to B, 1-based, as Inspect)."""
    if "-" in v:
        a, b = (int(p) for p in v.split("-", 1))
        if not 0 < a <= b:
            raise ValueError("a range is A-B with 0 < A <= B")
        return [a, b]
    return _positive(v)


def _ids(v: str) -> list[str | int]:
    return [int(p) if p.strip().isdigit() else p.strip() for p in v.split(",") if p.strip()]


def _seqs(v: str) -> list[str]:
    return [p for p in v.split(",") if p]


def _text(v: str) -> str:
    return v


def _effort(v: str) -> str:
    if v not in ("minimal", "low", "medium", "high"):
        raise ValueError("must be one of minimal, low, medium, high")
    return v


def _scalar(v: str) -> Any:
    """A task argument's value: JSON if it parses (numbers, true/false, lists), else text."""
    try:
        return json.loads(v)
    except ValueError:
        return v


@dataclass(frozen=True)
class Option:
    """One accepted option: ``inspect_ai.eval``'s keyword it sets and how its value
    parses (``None``: a flag that sets ``flag_value``; ``kv``: repeated ``key=value``)."""

    kwarg: str
    parse: Callable[[str], Any] | None = None
    flag_value: Any = True
    kv: bool = False


OPTIONS: dict[str, Option] = {
    "--limit": Option("limit", _limit),
    "--sample-id": Option("sample_id", _ids),
    "--epochs": Option("epochs", _positive),
    "-T": Option("task_args", _scalar, kv=True),
    "--task-arg": Option("task_args", _scalar, kv=True),
    "--temperature": Option("temperature", _float),
    "--top-p": Option("top_p", _float),
    "--top-k": Option("top_k", _int),
    "--max-tokens": Option("max_tokens", _positive),
    "--seed": Option("seed", _int),
    "--frequency-penalty": Option("frequency_penalty", _float),
    "--presence-penalty": Option("presence_penalty", _float),
    "--stop-seqs": Option("stop_seqs", _seqs),
    "--num-choices": Option("num_choices", _positive),
    "--best-of": Option("best_of", _positive),
    "--logprobs": Option("logprobs"),
    "--top-logprobs": Option("top_logprobs", _positive),
    "--system-message": Option("system_message", _text),
    "--reasoning-effort": Option("reasoning_effort", _effort),
    "--reasoning-tokens": Option("reasoning_tokens", _positive),
    "--max-connections": Option("max_connections", _positive),
    "--max-samples": Option("max_samples", _positive),
    "--max-retries": Option("max_retries", _int),
    "--timeout": Option("timeout", _positive),
    "--message-limit": Option("message_limit", _positive),
    "--token-limit": Option("token_limit", _positive),
    "--time-limit": Option("time_limit", _positive),
    "--working-limit": Option("working_limit", _positive),
    "--fail-on-error": Option("fail_on_error", _float),
    "--no-fail-on-error": Option("fail_on_error", flag_value=False),
    "--no-log-samples": Option("log_samples", flag_value=False),
}
# What openweights sets itself; named in the refusal so the user knows why.
_OURS = {"--model": "the job's model", "-M": "the server's model args",
         "--model-arg": "the server's model args", "--model-base-url": "the job's server",
         "--log-dir": "the job's results", "--log-format": "the job's results"}


def parse_options(options: str | None) -> dict[str, Any]:
    """``inspect_ai.eval`` keyword arguments for ``options`` (``"--limit 10 -T k=v"``).
    Raises :class:`InvalidOption` naming the first option it cannot take."""
    try:
        words = shlex.split(options or "")
    except ValueError as exc:
        raise InvalidOption(f"options {options!r} do not split like shell words: {exc}") \
            from None
    out: dict[str, Any] = {}
    i = 0
    while i < len(words):
        name, eq, inline = words[i].partition("=") if words[i].startswith("--") \
            else (words[i], "", "")
        i += 1
        opt = OPTIONS.get(name)
        if opt is None:
            raise InvalidOption(_refusal(name))
        if opt.parse is None:
            if eq:
                raise InvalidOption(f"option {name} is a flag and takes no value")
            out[opt.kwarg] = opt.flag_value
            continue
        if not eq:
            if i >= len(words):
                raise InvalidOption(f"option {name} needs a value")
            inline, i = words[i], i + 1
        _put(out, name, opt, inline)
    return out


def _put(out: dict[str, Any], name: str, opt: Option, raw: str) -> None:
    try:
        if opt.kv:
            key, eq, value = raw.partition("=")
            if not eq or not key:
                raise ValueError("must be key=value")
            out.setdefault(opt.kwarg, {})[key] = opt.parse(value)  # type: ignore[misc]
        else:
            out[opt.kwarg] = opt.parse(raw)  # type: ignore[misc]
    except ValueError as exc:
        raise InvalidOption(f"option {name} {raw!r}: {exc}") from None


def _refusal(name: str) -> str:
    if name in _OURS:
        return f"option {name} is not accepted: openweights sets {_OURS[name]} itself"
    if not name.startswith("-"):
        return (f"options take no positional argument ({name!r}): the eval is the job's "
                "eval_name")
    return (f"option {name} is not accepted (it is not one of Inspect's eval options "
            f"openweights passes on: {', '.join(sorted(OPTIONS))})")
