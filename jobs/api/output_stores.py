"""Where the API reads an item's outputs: the service's store, or an `output.url` bucket.

An archive job with `output.url` (jobs.archive_outputs) records each item's output as the
object's URL in another bucket; presigned URLs and the output route read it there. The
stores of those buckets are opened once per API process and share the service store's S3
client (same endpoint, credentials and public address for presigning), so a request never
builds a client. Kept beside the process's `Resources` (by identity, weakly), since they
live exactly as long.
"""

from __future__ import annotations

import threading
import weakref

from jobs.api.deps import Resources
from jobs.archive_outputs import OutputStores
from storage.objects import ObjectStore
from storage.stores import BucketStores

_BY_STORE: weakref.WeakKeyDictionary[ObjectStore, OutputStores] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def output_stores(res: Resources) -> OutputStores:
    """The API process's output stores, built on first use."""
    with _LOCK:
        found = _BY_STORE.get(res.store)
        if found is None:
            others = BucketStores(res.store, endpoint_url=res.settings.s3_endpoint_url)
            found = _BY_STORE[res.store] = OutputStores(res.store, others)
        return found
