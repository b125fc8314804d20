"""The pipeline on Ray Data: config, run, resume state, the dataset sink, relabel."""
