"""``import openweights.jobs.mmlu_pro``, as code written for the original does to make
``ow.mmlu_pro`` available (every client has it already): see
:mod:`openweights.jobs.evals`."""

from openweights.jobs.evals.job import MMLUPro

__all__ = ["MMLUPro"]
