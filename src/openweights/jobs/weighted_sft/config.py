"""``WeightedSFTConfig``: the params of ``ow.weighted_sft.create`` (the original's
``SFTConfig``), validated by the SDK at submit and read back by the worker.

Imports no ML package. The worker contract is fine-tuning's (see
:mod:`openweights.jobs.unsloth.config`): the job runs
``python -m openweights.jobs.weighted_sft.worker`` and reads these params with
``openweights.jobs.params.load_params(WeightedSFTConfig)``.

Rows of ``training_file`` are conversations whose message ``content`` may be a list of
parts ``{"type": "text", "text": ..., "weight": float, "tag": ...}``: each token of a
part is trained with its weight (negative: unlikelihood), as in the original.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from openweights.jobs.common import (
    CONVERSATIONS,
    DEFAULT_FINETUNED_MODEL_ID,
    DEFAULT_TARGET_MODULES,
    LearningRate,
    LoraDropout,
    ModelIdTemplate,
    Scheduler,
    WeightedSamplingCallback,
    check_dataset,
    one_of,
    positive_steps,
    resolve_learning_rate,
)

__all__ = ["WeightedSFTConfig"]

OPTIMIZERS = ("adamw_torch", "adamw", "adam", "sgd")


class WeightedSFTConfig(BaseModel):
    """Token-weighted SFT with transformers + PEFT (LoRA); unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., description="Hugging Face id, or an openweights model id")
    training_file: str = Field(..., description="file id of the training dataset")
    test_file: str | None = None
    chat_template: str = "default"
    finetuned_model_id: ModelIdTemplate = DEFAULT_FINETUNED_MODEL_ID
    ft_id_suffix: str | None = None
    model_naming_extra_parameters: dict[str, str] | None = None
    job_id_suffix: str | None = None
    max_seq_length: int = 2048
    load_in_4bit: bool = False
    loss: Literal["sft"] = "sft"
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
    optim: Annotated[str, one_of("optim", OPTIMIZERS)] = "adamw_torch"
    weight_decay: float = 0.01
    lr_scheduler_type: Scheduler = "linear"
    max_grad_norm: float = 1.0
    seed: int = 3407
    save_steps: int = 5000
    output_dir: str = "./tmp"
    train_on_responses_only: bool = True
    logp_callback_datasets: dict[str, str] = Field(default_factory=dict)
    sampling_callbacks: list[WeightedSamplingCallback] | None = None
    eval_batch_size: int = 8
    eval_every_n_steps: Annotated[Literal["log"] | int, AfterValidator(positive_steps)] = "log"
    meta: dict[str, Any] | None = None

    def learning_rate_value(self) -> float:
        """The learning rate to train with (``learning_rate`` evaluated)."""
        return resolve_learning_rate(self.learning_rate)

    def eval_steps_value(self) -> int:
        """How often to evaluate: ``eval_every_n_steps``, ``"log"`` being ``logging_steps``."""
        n = self.eval_every_n_steps
        return self.logging_steps if n == "log" else int(n)


    @model_validator(mode="after")
    def _datasets(self) -> WeightedSFTConfig:
        check_dataset(self.training_file, "training_file", CONVERSATIONS)
        if self.test_file is not None:
            check_dataset(self.test_file, "test_file", CONVERSATIONS)
        for tag, file_id in self.logp_callback_datasets.items():
            check_dataset(file_id, f"logp_callback_datasets[{tag!r}]", CONVERSATIONS)
        if self.merge_before_push and self.load_in_4bit:
            raise ValueError("merge_before_push cannot merge into a 4-bit model: set "
                             "merge_before_push=False or load_in_4bit=False")
        return self
