"""``moto_server``, with two deviations from S3 fixed, for tests of the ``s3://`` backend.

Run as a script with moto_server's arguments (``-H 127.0.0.1 -p PORT``). moto 5.2 as a
threaded server differs from S3 where the backend under test must see S3's behaviour:

* A part upload (or part copy, or completion) naming an upload that does not exist (any
  more) fails with a ``KeyError`` inside moto, answered as ``500``; and an upload id is
  taken for any key of its bucket. S3 answers ``404 NoSuchUpload`` to both. Fixed: a
  request with an ``uploadId`` that is missing, or another key's, is ``NoSuchUpload``.
* Overwriting an object (or a part) closes the old version's buffer at once, while another
  request thread may still be computing its ETag or reading it: that request fails with
  ``ValueError: I/O operation on closed file`` (a ``500``), although S3 serves either
  version whole. Fixed: a replaced version's buffer is left to the garbage collector.

Nothing else is changed; everything else moto does is what the tests see.
"""

from __future__ import annotations

import sys
from typing import Any


def patch_moto() -> None:
    from urllib.parse import parse_qs, urlsplit

    from moto.s3 import models, responses
    from moto.s3.exceptions import NoSuchUpload

    key_response = responses.S3Response._key_response

    def checked_key_response(self: Any, request: Any, full_url: str) -> Any:
        query = parse_qs(urlsplit(full_url).query, keep_blank_values=True)
        for upload_id in query.get("uploadId", [])[:1]:
            bucket = self.backend.get_bucket(self.parse_bucket_name_from_url(request, full_url))
            upload = dict.get(bucket.multiparts, upload_id)
            if upload is None or upload.key_name != self.parse_key_name():
                raise NoSuchUpload(upload_id=upload_id)
        return key_response(self, request, full_url)

    responses.S3Response._key_response = checked_key_response  # type: ignore[method-assign]

    def getitem(self: dict[str, Any], upload_id: str) -> Any:
        try:
            return dict.__getitem__(self, upload_id)
        except KeyError:
            raise NoSuchUpload(upload_id=upload_id) from None

    models.MultipartDict.__getitem__ = getitem  # type: ignore[method-assign,assignment]

    def dispose(self: Any, garbage: bool = False) -> None:
        self.disposed = True  # the buffer closes when the last reader lets go of the key

    models.FakeKey.dispose = dispose  # type: ignore[method-assign]


if __name__ == "__main__":
    patch_moto()
    from moto.server import main

    main(sys.argv[1:])
