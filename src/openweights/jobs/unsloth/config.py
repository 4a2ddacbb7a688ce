"""``TrainingConfig``: the params of ``ow.fine_tuning.create`` (the original's, with its
defaults), validated by the SDK at submit and read back by the worker.

Imports no ML package: the core install imports it.

The worker's contract
---------------------
- A fine-tuning job runs ``python -m openweights.jobs.unsloth.worker`` (its ``script``)
  in the worker environment of its image (``openweights.workerenv``), with the agent's
  job environment: ``OPENWEIGHTS_JOB_ID``, ``OPENWEIGHTS_RUN_ID``, ``OW_NATS_URL``,
  ``OPENWEIGHTS_API_KEY`` (the worker's token), the org's secrets (``HF_TOKEN``...).
- It reads its params with :func:`openweights.jobs.params.load_params` (``TrainingConfig``
  and the job's id), which is ``OpenWeights().jobs.retrieve($OPENWEIGHTS_JOB_ID)
  .params["validated_params"]`` validated again (a worker's token may read the jobs it
  was given); ``load_params(TrainingConfig, "<path>.json")`` reads a local file instead,
  as the original's ``training.py <config.json>`` did.
- ``validated_params`` is ``TrainingConfig(...).model_dump(mode="json")`` with
  ``finetuned_model_id`` final (org, model name and job id filled in) and every dataset
  param a file id (``training_file``, ``test_file``, ``logp_callback_datasets`` values,
  ``sampling_callbacks[].dataset``): a local path given to ``create`` is uploaded first.
  ``learning_rate`` is kept as given (a number or an expression): the worker trains with
  :meth:`TrainingConfig.learning_rate_value`.
- ``model`` is a Hugging Face id or the id of a model an earlier job produced
  (``ow.models.retrieve(id)``; see :mod:`openweights.jobs.models` for the event that
  announces one).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from openweights.jobs.common import (
    CONVERSATIONS,
    DEFAULT_FINETUNED_MODEL_ID,
    DEFAULT_TARGET_MODULES,
    OPTIMIZERS,
    PREFERENCE,
    LearningRate,
    LoraDropout,
    ModelIdTemplate,
    SamplingCallback,
    Scheduler,
    check_dataset,
    one_of,
    positive_steps,
    resolve_learning_rate,
)

__all__ = ["TrainingConfig"]

EVAL_STRATEGIES = ("no", "steps", "epoch")


class TrainingConfig(BaseModel):
    """Unsloth LoRA fine-tuning with ``loss`` ``sft``, ``dpo`` or ``orpo``; unknown keys are
    refused (a typo must not train with a default)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., description="Hugging Face id, or an openweights model id")
    training_file: str = Field(..., description="file id of the training dataset")
    test_file: str | None = None
    chat_template: str = "default"
    finetuned_model_id: ModelIdTemplate = DEFAULT_FINETUNED_MODEL_ID
    model_naming_extra_parameters: dict[str, str] | None = None
    job_id_suffix: str | None = None
    max_seq_length: int = 2048
    load_in_4bit: bool = False
    loss: Literal["dpo", "orpo", "sft"]
    is_peft: bool = True
    target_modules: list[str] | None = Field(default_factory=lambda: list(
        DEFAULT_TARGET_MODULES))
    lora_bias: Literal["all", "none"] = "none"
    r: int = 16
    lora_alpha: int = 16
    lora_dropout: LoraDropout = 0.0
    use_rslora: bool = True
    merge_before_push: bool = True
    push_to_private: bool = True
    epochs: int = 1
    max_steps: int | None = None
    per_device_train_batch_size: int = 2
    gradient_accumulation_steps: int = 8
    warmup_steps: int = 5
    learning_rate: LearningRate = 1e-4
    logging_steps: int = 1
    optim: Annotated[str, one_of("optim", OPTIMIZERS)] = "adamw_8bit"
    weight_decay: float = 0.01
    lr_scheduler_type: Scheduler = "linear"
    seed: int = 3407
    beta: float = 0.1
    save_steps: int = 5000
    output_dir: str = "./tmp"
    train_on_responses_only: bool = True
    packing: bool = True
    logp_callback_datasets: dict[str, str] = Field(default_factory=dict)
    eval_every_n_steps: Annotated[int, AfterValidator(positive_steps)] = 5000
    sampling_callbacks: list[SamplingCallback] | None = None
    eval_batch_size: int = 8
    test_file_eval_steps: int | float | None = None
    test_file_eval_strategy: str | None = "epoch"
    meta: dict[str, Any] | None = None

    def learning_rate_value(self) -> float:
        """The learning rate to train with (``learning_rate`` evaluated)."""
        return resolve_learning_rate(self.learning_rate)

    @field_validator("test_file_eval_strategy")
    @classmethod
    def _eval_strategy(cls, v: str | None) -> str | None:
        if v is not None and v not in EVAL_STRATEGIES:
            raise ValueError(f"test_file_eval_strategy must be one of "
                             f"{', '.join(EVAL_STRATEGIES)}")
        return v

    @model_validator(mode="after")
    def _datasets(self) -> TrainingConfig:
        purposes = PREFERENCE if self.loss in ("dpo", "orpo") else CONVERSATIONS
        check_dataset(self.training_file, f"training_file (loss {self.loss!r})", purposes)
        if self.test_file is not None:
            check_dataset(self.test_file, f"test_file (loss {self.loss!r})", purposes)
        else:
            self.test_file_eval_strategy = "no"  # nothing to evaluate on
        for tag, file_id in self.logp_callback_datasets.items():
            check_dataset(file_id, f"logp_callback_datasets[{tag!r}]", CONVERSATIONS)
        if self.logp_callback_datasets and (self.load_in_4bit or "4bit" in self.model):
            raise ValueError("logprob tracking (logp_callback_datasets) does not work with "
                             "4-bit models")
        return self
