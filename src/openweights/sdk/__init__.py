"""The SDK: AsyncOpenWeights (the API, awaitable) and OpenWeights (the same, blocking),
over NATS only.

Layers, each importing only those before it: ``transport`` (requests, retries, typed
errors) and ``types``; ``live``/``logs`` (live views); the async resources ``files``,
``events``, ``runs``, ``jobs``, ``tenancy``, ``current_run``; ``custom`` (job classes);
``client`` (``AsyncOpenWeights``); then the blocking twins ``loop``, ``sync_models``,
``sync_resources`` and ``blocking`` (``OpenWeights``).
"""
