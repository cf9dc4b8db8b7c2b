"""Test data: a seeded per-test context, unique identities, factories, one-statement inserts."""
