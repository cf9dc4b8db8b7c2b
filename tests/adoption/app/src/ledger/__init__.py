"""ledger: accounts, transfers between them, balances cached in Redis."""
