"""Logprob jobs (per-block logprob sums of a dataset under a model): ``config``, the SDK
job class in ``job``, the worker beside them. Importing this package imports nothing
else."""
