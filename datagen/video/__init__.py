"""Video ingest and frame-pair sampling: sources, probe, cheap decoding, shots, motion, pairing, synthetic clips."""
