"""Evaluations as job types: ``ow.inspect_ai`` (an Inspect AI eval of a model vLLM serves
inside the job) and ``ow.mmlu_pro`` (the MMLU-Pro chain-of-thought 5-shot eval on vLLM's
offline engine), whose headline scores are run events (:mod:`.scores`) that
``ow.evals.results`` and ``ow evals ls`` read.

``config``, ``options``, ``scores``, ``mmlu`` and ``job`` import no ML package (the SDK
validates with them); ``mmlu_pro`` and ``inspect_eval`` are the workers, run in the vLLM
worker environment.
"""
