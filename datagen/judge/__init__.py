"""The verify stage's parts: the judge's answer schema, its prompt and its validator (stages/verify.py wires them)."""
