"""Mailings: composing and sending email; for now transactional email and its log."""
