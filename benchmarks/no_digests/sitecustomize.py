"""Diagnostic only, for the benchmarks' "digests skipped" paths: put on a module process's
PYTHONPATH, this makes the SHA-256 digests of _tree and _image no-ops in that process, to
measure what they cost beside the native pipeline. The image such a process writes has
wrong digests; the benchmark aborts its session and never reads it."""

import hashlib
import types

from ansible_collections.lifeboat.backup.plugins.module_utils import _image, _tree


class _NoDigest:
    def update(self, data):
        """Takes the bytes and hashes nothing."""

    def hexdigest(self):
        return "0" * 64

    def digest(self):
        return bytes(32)

    def copy(self):
        return self


def _no_digest(data=b""):  # hashlib.sha256's signature; the data is not hashed
    del data
    return _NoDigest()


_WITHOUT = types.SimpleNamespace(**vars(hashlib))
_WITHOUT.sha256 = _no_digest
_tree.hashlib = _WITHOUT
_image.hashlib = _WITHOUT
