"""Unit tests of the DME's in-process logic: cookies, world, ranking, rate limits."""
