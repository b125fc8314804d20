"""Dataset I/O: storage (local or object store), shard writing, tables, reading, validation."""
