"""Pair filters with real detectors that ship in PyPI wheels: text regions (RapidOCR) and nudity (NudeNet)."""
