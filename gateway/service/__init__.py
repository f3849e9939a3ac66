"""S3 semantics over the metadata index and a storage backend; shared by every API."""
