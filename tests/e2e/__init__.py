"""End-to-end tests: daemons run as real subprocesses and are reached over loopback."""
