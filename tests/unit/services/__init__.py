"""Unit tests of the services, one package per daemon."""
