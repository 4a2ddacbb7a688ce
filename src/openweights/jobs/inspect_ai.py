"""``import openweights.jobs.inspect_ai``, as code written for the original does to make
``ow.inspect_ai`` available (every client has it already): see
:mod:`openweights.jobs.evals`."""

from openweights.jobs.evals.job import InspectAI

__all__ = ["InspectAI"]
