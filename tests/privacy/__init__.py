"""Tests that try to break the privacy rules in privacy/."""
