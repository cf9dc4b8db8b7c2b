"""testbed's pytest plugin: options, hooks and fixtures for the E2E suite."""
