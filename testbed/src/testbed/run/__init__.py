"""A run: its controller (the one owner of shared resources), lease renewal and breaker, Redis
database claims, and what the plugin keeps on pytest's stash."""
