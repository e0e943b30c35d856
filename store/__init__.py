"""The ClickHouse tables the sink writes and the API reads: the adapter, the schema
(migrations and views) and the rows and feed items derived from the records."""
