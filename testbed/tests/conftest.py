"""testbed's own tests: this folder is on sys.path, so they import `tinyapp`, their small app."""
