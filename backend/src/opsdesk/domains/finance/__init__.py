"""Finance: a double-entry ledger and invoices."""
