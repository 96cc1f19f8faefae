"""InfluxDB: the line-protocol writer and sink, the InfluxQL reader, the synchronous writer."""
