"""Supporters: people, their consent ledger, tags, sign-up and email preferences."""
