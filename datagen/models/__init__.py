"""Tiny random models built from configs, for tests and the CPU demo (no weights can be downloaded)."""
