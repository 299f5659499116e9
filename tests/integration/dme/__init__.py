"""Integration tests of the DME against real servers."""
