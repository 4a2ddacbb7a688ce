"""The wire protocol between clients (SDK, CLI, agents) and the api service."""
