"""The SDK: OpenWeights (blocking) and AsyncOpenWeights (awaitable), over NATS only."""
