"""Helpers the tests share: clips, Prefect servers and API, tiny models."""
