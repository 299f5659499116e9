"""End-to-end tests of the DME process against a Controller (real or simulated over notify)."""
