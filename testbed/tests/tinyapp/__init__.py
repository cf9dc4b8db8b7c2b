"""A tiny app for testbed's own tests: a few SQLAlchemy models and an event channel, so
testbed is tested on its own, never through the demo app (opsdesk)."""
