"""Helpers shared by tests: local servers, demo daemons, waiting utilities."""
