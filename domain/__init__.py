"""The pure core: the bucket calendar and the drop rule. No I/O lives here."""
