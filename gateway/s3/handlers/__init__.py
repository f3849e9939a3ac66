"""One module per operation family; ``HANDLERS`` maps every routed operation to its handler."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.responses import Response

from gateway.s3.handlers import (
    access,
    buckets,
    encryption,
    lifecycle,
    listing,
    multipart,
    objects,
    post,
    tagging,
)
from gateway.s3.request import S3Request
from gateway.s3.routing import Op

Handler = Callable[[S3Request], Awaitable[Response]]

HANDLERS: dict[Op, Handler] = {
    Op.LIST_BUCKETS: buckets.list_buckets,
    Op.CREATE_BUCKET: buckets.create_bucket,
    Op.HEAD_BUCKET: buckets.head_bucket,
    Op.DELETE_BUCKET: buckets.delete_bucket,
    Op.GET_BUCKET_LOCATION: buckets.get_bucket_location,
    Op.GET_BUCKET_VERSIONING: buckets.get_bucket_versioning,
    Op.PUT_BUCKET_VERSIONING: buckets.put_bucket_versioning,
    Op.LIST_OBJECT_VERSIONS: listing.list_object_versions,
    Op.LIST_OBJECTS: listing.list_objects_v1,
    Op.LIST_OBJECTS_V2: listing.list_objects_v2,
    Op.PUT_OBJECT: objects.put_object,
    Op.GET_OBJECT: objects.get_object,
    Op.HEAD_OBJECT: objects.head_object,
    Op.DELETE_OBJECT: objects.delete_object,
    Op.DELETE_OBJECTS: objects.delete_objects,
    Op.COPY_OBJECT: objects.copy_object,
    Op.CREATE_MULTIPART_UPLOAD: multipart.create_multipart_upload,
    Op.UPLOAD_PART: multipart.upload_part,
    Op.UPLOAD_PART_COPY: multipart.upload_part_copy,
    Op.COMPLETE_MULTIPART_UPLOAD: multipart.complete_multipart_upload,
    Op.ABORT_MULTIPART_UPLOAD: multipart.abort_multipart_upload,
    Op.LIST_PARTS: multipart.list_parts,
    Op.LIST_MULTIPART_UPLOADS: multipart.list_multipart_uploads,
    Op.PUT_BUCKET_CORS: access.put_bucket_cors,
    Op.GET_BUCKET_CORS: access.get_bucket_cors,
    Op.DELETE_BUCKET_CORS: access.delete_bucket_cors,
    Op.PUT_BUCKET_ACL: access.put_bucket_acl,
    Op.GET_BUCKET_ACL: access.get_bucket_acl,
    Op.PUT_OBJECT_ACL: access.put_object_acl,
    Op.GET_OBJECT_ACL: access.get_object_acl,
    Op.POST_OBJECT: post.post_object,
    Op.PUT_OBJECT_TAGGING: tagging.put_object_tagging,
    Op.GET_OBJECT_TAGGING: tagging.get_object_tagging,
    Op.DELETE_OBJECT_TAGGING: tagging.delete_object_tagging,
    Op.PUT_BUCKET_TAGGING: tagging.put_bucket_tagging,
    Op.GET_BUCKET_TAGGING: tagging.get_bucket_tagging,
    Op.DELETE_BUCKET_TAGGING: tagging.delete_bucket_tagging,
    Op.PUT_BUCKET_LIFECYCLE: lifecycle.put_bucket_lifecycle,
    Op.GET_BUCKET_LIFECYCLE: lifecycle.get_bucket_lifecycle,
    Op.DELETE_BUCKET_LIFECYCLE: lifecycle.delete_bucket_lifecycle,
    Op.PUT_BUCKET_ENCRYPTION: encryption.put_bucket_encryption,
    Op.GET_BUCKET_ENCRYPTION: encryption.get_bucket_encryption,
    Op.DELETE_BUCKET_ENCRYPTION: encryption.delete_bucket_encryption,
}
