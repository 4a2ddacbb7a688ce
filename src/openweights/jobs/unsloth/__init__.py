"""Unsloth fine-tuning (SFT, DPO, ORPO): ``config`` (params, importable anywhere), the
SDK job class in ``job``, and the worker (``python -m openweights.jobs.unsloth.worker``,
run in the worker environment). Importing this package imports nothing else."""
