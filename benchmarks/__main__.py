"""`make bench`: every measurement, one after the other."""

from benchmarks import (
    large_object_rss,
    multipart_upload,
    scale_out,
    small_objects,
    upstream_multipart,
)

small_objects.main([])
print()
large_object_rss.main([])
print()
multipart_upload.main([])
print()
upstream_multipart.main([])
print()
scale_out.main([])
