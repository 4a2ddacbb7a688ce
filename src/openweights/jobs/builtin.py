"""Registers the built-in job types (``ow.fine_tuning``, ``ow.weighted_sft``,
``ow.logprob``, ``ow.inference``, ``ow.api``) on every client: the SDK client imports
this module."""

from __future__ import annotations

from openweights.jobs.evals.job import InspectAI, MMLUPro
from openweights.jobs.logprob.job import LogProb
from openweights.jobs.unsloth.job import FineTuning
from openweights.jobs.vllm.job import Api, Inference
from openweights.jobs.weighted_sft.job import WeightedSFT

__all__ = ["BUILTIN", "Api", "FineTuning", "Inference", "InspectAI", "LogProb", "MMLUPro",
           "WeightedSFT"]

BUILTIN = {"fine_tuning": FineTuning, "weighted_sft": WeightedSFT, "logprob": LogProb,
           "inference": Inference, "api": Api,
           "inspect_ai": InspectAI, "mmlu_pro": MMLUPro}
