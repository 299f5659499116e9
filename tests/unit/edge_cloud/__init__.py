"""Unit tests of the core package `edge_cloud`."""
