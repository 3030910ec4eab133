"""Inbound provider webhooks: each verified, stored once in an inbox, processed after."""
