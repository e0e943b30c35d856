"""The processor stage: snapshots in, drops out (Quix Streams, RocksDB state)."""
