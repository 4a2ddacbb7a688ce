"""What the built-in training configs share: learning-rate expressions, the finetuned
model id template, Hugging Face repo id rules, dataset purposes and sampling callbacks.

Pure Python and pydantic only: the SDK validates params with these at submit, and the
worker reads them back in its own environment.
"""

from __future__ import annotations

import ast
import operator
import re
import string
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from openweights.ids import FILE_ID

OPTIMIZERS = ("adamw_8bit", "adamw", "adam", "sgd")
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
              "constant_with_warmup")
DEFAULT_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                          "down_proj"]
DEFAULT_FINETUNED_MODEL_ID = "{org_id}/{model_name}-{job_id}"
# The placeholder the service fills with the job's id once it has hashed the params
# (the id covers the template, as in the original, and the stored value is final).
JOB_ID_PLACEHOLDER = "{job_id}"
# Orgs the original refuses in finetuned_model_id: not an org anyone pushes to.
FORBIDDEN_ORGS = ("datasets", "models", "unsloth", "None")

# Purposes a dataset param may have, by what it holds.
CONVERSATIONS = ("conversations",)
PREFERENCE = ("preference", "preferences")

_BINOPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.USub: operator.neg, ast.UAdd: operator.pos}
_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


def _arith(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _arith(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) \
            and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return float(_BINOPS[type(node.op)](_arith(node.left), _arith(node.right)))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return float(_UNARY[type(node.op)](_arith(node.operand)))
    raise ValueError(f"learning_rate: {ast.unparse(node)!r} is not a number or arithmetic "
                     "on numbers")


def resolve_learning_rate(value: float | str) -> float:
    """The learning rate ``value`` stands for: a positive number as it is, or an
    arithmetic expression (``"1e-4 * 2"``, ``"10**-4"``); a negative result means
    ``10 ** result`` (``"-4"`` is 1e-4), as in the original. Only numbers and
    ``+ - * / **`` are evaluated (never arbitrary code). Raises ``ValueError``."""
    if isinstance(value, bool):
        raise ValueError("learning_rate is a number or an arithmetic expression, not a bool")
    if isinstance(value, int | float):
        lr = float(value)
    else:
        try:
            lr = _arith(ast.parse(value.strip(), mode="eval"))
        except SyntaxError:
            raise ValueError(f"learning_rate {value!r} is not an arithmetic expression") \
                from None
        except (OverflowError, ZeroDivisionError) as exc:
            raise ValueError(f"learning_rate {value!r}: {exc}") from None
        if lr < 0:
            lr = 10.0 ** lr
    if not lr > 0 or lr != lr or lr == float("inf"):
        raise ValueError(f"learning_rate must be positive, not {value!r}")
    return lr


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` if it is a Hugging Face model id ``org/name`` that can be pushed to
    (the rules of ``huggingface_hub.validate_repo_id``, and not one of the orgs the
    original refuses). Raises ``ValueError`` naming the rule broken."""
    parts = repo_id.split("/")
    if len(parts) != 2:
        raise ValueError(f"model id {repo_id!r} must be 'org/name'")
    org, _ = parts
    if org in FORBIDDEN_ORGS:
        raise ValueError(f"org {org!r} of {repo_id!r} is not an org you can push to: set "
                         "$HF_ORG (or the org's HF_ORG secret) or give finetuned_model_id")
    for part in parts:
        if not _REPO_PART.match(part) or "--" in part or ".." in part or \
                part.endswith((".", "-")):
            raise ValueError(f"{part!r} in model id {repo_id!r}: use letters, digits, '-', "
                             "'_' and '.' (no '--' or '..', at most 96, not ending in '-' "
                             "or '.')")
    return repo_id


def check_template(template: str) -> str:
    """The finetuned model id template: ``org/name`` once its fields are filled."""
    if len(template.split("/")) != 2:
        raise ValueError("finetuned_model_id must be in the format 'org/name' (fields such "
                         "as {org_id}, {model_name} and {job_id} are filled in)")
    return template


def format_model_id(template: str, *, org_id: str | None, model: str,
                    params: Mapping[str, Any],
                    extra: Mapping[str, str] | None = None) -> str:
    """The template filled with ``org_id``, ``model_name`` (the last part of ``model``),
    every string param and ``extra`` (``model_naming_extra_parameters``); ``{job_id}``
    stays for the service to fill once the id is known. Raises ``ValueError`` for a
    field nothing fills."""
    fields: dict[str, Any] = {k: v for k, v in params.items() if isinstance(v, str)}
    fields |= dict(extra or {})
    fields.update(org_id=org_id, model_name=model.split("/")[-1], job_id=JOB_ID_PLACEHOLDER)
    names = [f for _, f, _, _ in string.Formatter().parse(template) if f]
    if missing := sorted({n for n in names if n.split(".")[0].split("[")[0] not in fields}):
        raise ValueError(f"finetuned_model_id {template!r} names {', '.join(missing)}, which "
                         "no param fills (add it to model_naming_extra_parameters)")
    return template.format(**fields)


def purpose_of(file_id: str) -> str | None:
    """The purpose in a file id (``conversations:file-…``), None if it is not one."""
    match = FILE_ID.match(file_id)
    return match.group("purpose") if match else None


def check_dataset(value: str, what: str, purposes: tuple[str, ...]) -> str:
    """``value`` if it is a file id of one of ``purposes`` or not a file id at all (a
    local path, uploaded by the SDK before it submits). Raises ``ValueError``."""
    purpose = purpose_of(value)
    if purpose is not None and purpose not in purposes:
        raise ValueError(f"{what} {value!r} is a {purpose!r} file; it must be uploaded with "
                         f"purpose {' or '.join(repr(p) for p in purposes)}")
    return value


def positive_steps(value: int | str | None) -> int | str | None:
    if isinstance(value, int) and value <= 0:
        raise ValueError("evaluation steps must be positive if given as an integer")
    return value


def one_of(name: str, choices: tuple[str, ...]) -> AfterValidator:
    """A field check: the value is one of ``choices`` (the error names ``name``)."""
    def check(value: str) -> str:
        if value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(choices)}")
        return value
    return AfterValidator(check)


def _learning_rate(value: float | str) -> float | str:
    resolve_learning_rate(value)  # an expression is refused at submit, not on the machine
    return value


def _lora_dropout(value: float) -> float:
    if not 0 <= value <= 1:
        raise ValueError("lora_dropout must be between 0 and 1")
    return value


# The fields the training configs share, each with its check.
LearningRate = Annotated[float | str, AfterValidator(_learning_rate)]
ModelIdTemplate = Annotated[str, AfterValidator(check_template)]
LoraDropout = Annotated[float, AfterValidator(_lora_dropout)]
Scheduler = Annotated[str, one_of("lr_scheduler_type", SCHEDULERS)]


class SamplingCallback(BaseModel):
    """Generate completions for ``dataset`` (a conversations file) every ``eval_steps``:
    a ``samples`` file and event per evaluation."""

    model_config = ConfigDict(extra="forbid")

    dataset: str
    eval_steps: Literal["log"] | int = 10
    batch_size: int = 8
    tag: str = "samples"
    temperature: float = Field(0, ge=0)
    max_tokens: int = Field(600, gt=0)

    @field_validator("eval_steps")
    @classmethod
    def _eval_steps(cls, v: int | str) -> int | str:
        positive_steps(v)
        return v

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, v: str) -> str:
        return check_dataset(v, "sampling_callbacks dataset", CONVERSATIONS)


class WeightedSamplingCallback(SamplingCallback):
    """Weighted SFT's sampling callback: evaluates every logging step by default."""

    eval_steps: Literal["log"] | int = "log"
