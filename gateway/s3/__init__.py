"""The S3 wire protocol: routing, headers, XML, errors, and the handlers per operation."""
