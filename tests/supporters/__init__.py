"""Tests of the public supporter flows: sign-up, preferences, one-click unsubscribe."""
