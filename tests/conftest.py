"""Fixtures shared by several test modules."""

import pytest


@pytest.fixture
def offline(monkeypatch):
    """Never touch the network: weight lookups must fail fast with the offline message."""
    monkeypatch.setenv("INTERP_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
