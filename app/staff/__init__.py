"""Staff: accounts, roles, sign-in, dashboard and the audit log."""
