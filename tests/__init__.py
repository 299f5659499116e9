"""Tests of the Edge Cloud Platform; layers and conventions in architecture section 11."""
