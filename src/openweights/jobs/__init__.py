"""The built-in job types: fine-tuning (``ow.fine_tuning``), token-weighted SFT
(``ow.weighted_sft``) and logprobs (``ow.logprob``).

Each subpackage has a ``config`` module (the job's params as a pydantic model: what the
SDK validates at submit and the worker reads back) that imports no ML package, so the
core install can import it; the worker modules beside it run in the job's own
environment (see :mod:`openweights.workerenv`). :mod:`openweights.jobs.models` is the
shape of the event a run announces a model with.
"""
