"""Adapters for outside services: the only modules that import vendor SDKs."""
