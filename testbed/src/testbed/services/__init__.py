"""Service backends: native processes, Docker Compose, or external URLs, behind one interface
(backend.py); lifecycle.py owns starting, reusing and stopping them under leases.

The package namespace stays empty so that importing one backend never imports the others."""
