"""The caption stage's parts: output schema, prompt, validator and model backends (stages/caption.py wires them)."""
