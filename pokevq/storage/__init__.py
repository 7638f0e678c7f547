"""One storage interface, two backends that write the same layout.

`base` (the interface) ← `s3` (boto3, with `listing`'s fast parser) and `local` (a directory);
`uri` picks the backend an `s3://…` URI or a local path names.
"""

from pokevq.storage.base import ListingPage, ObjectInfo, Storage
from pokevq.storage.local import LocalStorage
from pokevq.storage.s3 import FAST_FAIL, S3Credentials, S3Storage, parse_s3_uri
from pokevq.storage.uri import storage_for_uri

__all__ = ["FAST_FAIL", "ListingPage", "LocalStorage", "ObjectInfo", "S3Credentials", "S3Storage", "Storage",
           "parse_s3_uri", "storage_for_uri"]
