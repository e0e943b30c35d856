"""ClickHouse sink: drops and bucket stats from Kafka into ClickHouse."""
