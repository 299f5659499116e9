"""Unit tests: no external process; in-process gRPC servers on loopback are fine."""
