"""The lake: parquet tables and JSON documents on a local folder or S3, every write atomic."""
