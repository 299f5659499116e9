"""Unit tests of the `edge` command."""
