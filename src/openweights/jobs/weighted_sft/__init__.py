"""Token-weighted SFT: ``config`` (params, importable anywhere), the SDK job class in
``job``, the worker beside them. Importing this package imports nothing else."""
