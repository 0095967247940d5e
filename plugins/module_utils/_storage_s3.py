# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE module_utils of lifeboat.backup: not a public API, may change without notice.
"""Storage target ``type: s3``: S3-compatible object storage with boto3, any endpoint.

An object store has no rename, but a multipart upload is invisible until it is
completed, and completion is atomic: that is the temporary name. Each part carries its
SHA-256 checksum (``x-amz-checksum-sha256``), which the server computes over what it
received and refuses on a mismatch; after completion the object's size and composite
SHA-256 checksum, as the server reports them, are compared with what was sent. A server
without S3 checksums gets ``Content-MD5`` per part and the multipart ETag instead. The
whole object's SHA-256, computed while reading the source, goes into the sidecar. Parts
go WORKERS at a time and downloads fetch RANGE_WORKERS ranges at a time, with at most that
many in memory. A retried upload lists the parts already on the server and sends only the
ones that are missing or differ. An existing key is never replaced: it is checked before
the upload and again before completion, and completion asks for ``If-None-Match: *``
where the server understands it. Object stores have no free space to report.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import itertools
import posixpath
import time
import traceback

from ansible_collections.lifeboat.backup.plugins.module_utils._storage_backend import (
    RESERVED_PREFIX,
    Backend,
    Source,
    StorageError,
    Throttle,
    check_name,
    entry,
)

# boto3 is imported by the first S3 backend (memory: see _storage_sftp).
boto3 = botocore = None
HAS_BOTO3 = None
BOTO3_IMPORT_ERROR = None


def _load_boto3():
    global boto3, botocore, HAS_BOTO3, BOTO3_IMPORT_ERROR
    if HAS_BOTO3 is None:
        try:
            import boto3
            import botocore.config
            import botocore.exceptions

            HAS_BOTO3 = True
        except ImportError:
            HAS_BOTO3 = False
            BOTO3_IMPORT_ERROR = traceback.format_exc()
    return HAS_BOTO3


PART_SIZE = 8 * 1024 * 1024
WORKERS = 3  # parts uploaded at once; memory is about WORKERS x PART_SIZE
# Downloads: many small ranges at once keep the server busy (boto3's download_file uses
# ten threads) while the memory held stays about RANGE_WORKERS x RANGE_SIZE.
RANGE_SIZE = 2 * 1024 * 1024
RANGE_WORKERS = 8
MAX_PARTS = 10000
PROBE_KEY = ".lifeboat-probe"

_AUTH = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "InvalidClientTokenId", "AuthorizationHeaderMalformed")
_TRANSIENT = ("SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "RequestTimeTooSkewed", "503", "500")


def s3_error(exc, what, label):
    """A StorageError for a boto3/botocore exception met while doing ``what``."""
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, (botocore.exceptions.ConnectTimeoutError, botocore.exceptions.ReadTimeoutError)):
        return StorageError("%s: %s timed out" % (label, what), kind="timeout")
    if isinstance(exc, (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectionClosedError, botocore.exceptions.ConnectionError)):
        return StorageError("%s: %s failed: cannot reach the endpoint (%s)" % (label, what, exc), kind="unreachable")
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return StorageError("%s: no S3 credentials: give target.access_key and target.secret_key" % label, kind="auth")
    if isinstance(exc, botocore.exceptions.ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        text = exc.response.get("Error", {}).get("Message") or code
        if code in _AUTH:
            return StorageError(
                "%s: %s failed: the server refused the credentials (%s): check target.access_key and target.secret_key" % (label, what, code), kind="auth"
            )
        if code in ("AccessDenied", "403", "AllAccessDisabled"):
            return StorageError(
                "%s: %s failed: access denied: check target.access_key and target.secret_key, and that they may write to the bucket and prefix" % (label, what),
                kind="permission",
            )
        if code in ("NoSuchBucket",):
            return StorageError("%s: the bucket does not exist: create it, or fix target.bucket" % label, kind="not_found")
        if code in ("NoSuchKey", "404", "NoSuchUpload", "NotFound"):
            return StorageError("%s: %s failed: not found" % (label, what), kind="not_found")
        if code in ("EntityTooLarge", "QuotaExceeded", "XMinioStorageFull", "StorageFull"):
            return StorageError("%s: %s failed: the storage is full or over quota (%s)" % (label, what, text), kind="full")
        if code in ("BadDigest", "InvalidDigest", "InvalidPart"):
            return StorageError("%s: %s failed: the server received damaged data (%s)" % (label, what, code), kind="integrity", transient=True)
        if code in ("PreconditionFailed", "412"):
            return StorageError("%s: %s failed: the key already exists (it is never overwritten)" % (label, what), kind="exists")
        return StorageError("%s: %s failed: %s (%s)" % (label, what, text, code), kind="protocol", transient=code in _TRANSIENT)
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        return StorageError("%s: %s failed: %s" % (label, what, exc), kind="unreachable")
    if isinstance(exc, OSError):
        return StorageError("%s: %s failed: %s" % (label, what, exc), kind="unreachable")
    return StorageError("%s: %s failed: %s" % (label, what, exc), kind="protocol")


class S3Backend(Backend):
    kind = "s3"
    verification = "server-sha256-parts"

    def __init__(self, target):
        super().__init__(target)
        if not _load_boto3():
            raise StorageError(
                "type s3 needs the Python library boto3 on this node (pip install boto3, or python3-boto3)", kind="unsupported", exception=BOTO3_IMPORT_ERROR
            )
        self.bucket = target["bucket"]
        prefix = (target.get("path") or "").strip("/")
        self.prefix = prefix + "/" if prefix else ""
        timeout = target.get("timeout") or 30
        config = botocore.config.Config(
            # Every upload carries a checksum the server verifies (SHA-256 or Content-MD5, a
            # signed header): hashing the body again for the signature would only cost time.
            s3={"addressing_style": target.get("addressing_style") or "auto", "payload_signing_enabled": False},
            connect_timeout=timeout,
            read_timeout=max(timeout, 60),
            retries={"max_attempts": 1, "mode": "standard"},
            **_checksum_options(),
        )
        verify = target.get("ca_file") or target.get("validate_certs", True)
        self.client = boto3.session.Session().client(
            "s3",
            endpoint_url=target.get("endpoint_url"),
            region_name=target.get("region") or "us-east-1",
            aws_access_key_id=target.get("access_key"),
            aws_secret_access_key=target.get("secret_key"),
            aws_session_token=target.get("session_token"),
            config=config,
            verify=verify,
        )

    def key(self, name):
        return self.prefix + check_name(name)

    def _call(self, what, operation, **kwargs):
        try:
            return getattr(self.client, operation)(Bucket=self.bucket, **kwargs)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a StorageError with its kind
            raise s3_error(exc, what, self.label) from None

    # ---- contract ----------------------------------------------------------------------

    def stat(self, name, checksum=False):
        key = self.key(name)
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key, **({"ChecksumMode": "ENABLED"} if checksum else {}))
        except botocore.exceptions.ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise s3_error(exc, "stat of %s" % key, self.label) from None
        except Exception as exc:  # noqa: BLE001
            raise s3_error(exc, "stat of %s" % key, self.label) from None
        found = entry(name, head["ContentLength"], time.mktime(head["LastModified"].utctimetuple()) if head.get("LastModified") else None)
        found["etag"] = head.get("ETag", "").strip('"')
        found["checksum_sha256"] = head.get("ChecksumSHA256")
        return found

    def put(self, name, source, size=None, progress=None):
        key = self.key(name)
        started = time.monotonic()
        if self.stat(name) is not None:
            raise StorageError("%s already exists on %s; an existing copy is never overwritten" % (name, self.label), kind="exists")
        src = Source(source, size)
        try:
            state = {"resumed_parts": 0}
            record = self._retrying("uploading %s to %s" % (name, self.label), lambda attempt: self._upload(name, key, src, progress, state, attempt))
        finally:
            src.close()
        record.update(seconds=round(time.monotonic() - started, 3), resumed_from=state["resumed_parts"])
        return record

    def _part_size(self, size):
        if size is None:
            return PART_SIZE
        return max(PART_SIZE, -(-size // MAX_PARTS))

    def _upload(self, name, key, src, progress, state, attempt):
        if attempt > 1 and not src.seekable:
            raise StorageError("the upload of %s failed and its source is a stream that cannot be read again" % name, kind="unreachable", transient=False)
        upload_id, existing = self._find_upload(key)
        if upload_id is None:
            created = self._call("starting the upload of %s" % key, "create_multipart_upload", Key=key, ChecksumAlgorithm="SHA256")
            upload_id, sha256_parts = created["UploadId"], created.get("ChecksumAlgorithm") == "SHA256"
        else:
            sha256_parts = existing.pop("sha256", False)
        try:
            parts, sha, total = self._send_parts(key, upload_id, src, existing, sha256_parts, progress, state)
            how = self._complete(name, key, upload_id, parts, total, sha256_parts)
        except StorageError as exc:
            if not exc.transient:
                self._abort(key, upload_id)
            raise
        return {"name": name, "size": total, "sha256": sha.hexdigest(), "verified": how, "attempts": attempt, "location": self.location}

    def _find_upload(self, key):
        """An unfinished upload of this key to resume, with its parts (number: (size,
        SHA-256 checksum or MD5 ETag)); key ``sha256`` says which of the two."""
        uploads = self._call("listing unfinished uploads", "list_multipart_uploads", Prefix=key).get("Uploads", [])
        for upload in uploads:
            if upload.get("Key") != key:
                continue
            parts = {"sha256": upload.get("ChecksumAlgorithm") == "SHA256"}
            marker = 0
            while True:
                page = self._call("listing uploaded parts", "list_parts", Key=key, UploadId=upload["UploadId"], PartNumberMarker=marker)
                for part in page.get("Parts", []):
                    parts[part["PartNumber"]] = (part["Size"], part.get("ChecksumSHA256") if parts["sha256"] else part["ETag"].strip('"'))
                if not page.get("IsTruncated"):
                    break
                marker = page["NextPartNumberMarker"]
            return upload["UploadId"], parts
        return None, {}

    def _send_parts(self, key, upload_id, src, existing, sha256_parts, progress, state):
        """Read the source in order (the whole file's SHA-256 on the way) and upload the
        parts concurrently, at most WORKERS of them in memory: memory stays flat."""
        part_size = self._part_size(src.size)
        throttle = Throttle(self.throttle_kib)
        sha = src.rewind(0) if src.seekable else hashlib.sha256()
        parts, pending, number = [], [], 1

        def collect(future):
            part, sent = future.result()
            parts.append(part)
            state["resumed_parts"] += 0 if sent else 1
            throttle(part["_size"] if sent else 0)
            if progress:
                progress(sum(p["_size"] for p in parts), src.size)

        with concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS) as pool:
            try:
                while True:
                    data = _read_full(src.fp, part_size)
                    if not data and number > 1:
                        break
                    sha.update(data)
                    last = len(data) < part_size
                    pending.append(pool.submit(self._send_part, key, upload_id, number, data, existing.get(number), sha256_parts))
                    del data
                    while len(pending) >= WORKERS:
                        collect(pending.pop(0))
                    if last:
                        break
                    number += 1
                while pending:
                    collect(pending.pop(0))
            finally:
                for future in pending:
                    future.cancel()
        parts.sort(key=lambda p: p["PartNumber"])
        return parts, sha, sum(p["_size"] for p in parts)

    def _send_part(self, key, upload_id, number, data, existing, sha256_parts):
        """Upload one part with the checksum the server verifies on receipt (SHA-256, or
        Content-MD5 where the server has no SHA-256 checksums), unless an earlier attempt
        already stored it; returns (the part for completion, whether it was sent)."""
        if sha256_parts:
            digest = hashlib.sha256(data).digest()
            checksum = {"ChecksumSHA256": base64.b64encode(digest).decode()}
            part = {"PartNumber": number, "ChecksumSHA256": checksum["ChecksumSHA256"], "_size": len(data), "_digest": digest}
            if existing == (len(data), checksum["ChecksumSHA256"]):
                return part, False
        else:
            digest = hashlib.md5(data).digest()  # noqa: S324 - Content-MD5 is what S3 servers check parts with
            checksum = {"ContentMD5": base64.b64encode(digest).decode()}
            part = {"PartNumber": number, "ETag": '"%s"' % digest.hex(), "_size": len(data), "_digest": digest}
            if existing == (len(data), digest.hex()):
                return part, False
        answer = self._call("uploading part %d of %s" % (number, key), "upload_part", Key=key, UploadId=upload_id, PartNumber=number, Body=data, **checksum)
        part["ETag"] = answer.get("ETag") or part.get("ETag")
        returned = answer.get("ChecksumSHA256") if sha256_parts else answer.get("ETag", "").strip('"')
        expected = checksum["ChecksumSHA256"] if sha256_parts else digest.hex()
        if sha256_parts and returned is None:
            raise StorageError("part %d of %s: the server did not confirm its SHA-256 checksum" % (number, key), kind="integrity", transient=True)
        if returned and (sha256_parts or len(returned) == 32) and returned != expected:
            raise StorageError(
                "part %d of %s: the server stored other bytes than were sent (checksum %s, expected %s)" % (number, key, returned, expected),
                kind="integrity",
                transient=True,
            )
        return part, True

    def _complete(self, name, key, upload_id, parts, total, sha256_parts):
        """Complete the upload unless the key appeared meanwhile, then compare what the
        server says it holds with what was sent; returns how it was verified."""
        if self.stat(name) is not None:
            self._abort(key, upload_id)
            raise StorageError("%s appeared on %s during the upload; the existing copy was left as it is" % (name, self.label), kind="exists")
        self._complete_upload(key, upload_id, [{k: v for k, v in p.items() if not k.startswith("_")} for p in parts])
        self._check_completed(name, parts, total, sha256_parts)
        return "server-sha256-parts" if sha256_parts else "server-md5-parts"

    def _complete_upload(self, key, upload_id, listed):
        """Complete with If-None-Match (never over a copy that appeared meanwhile), or without
        it on a server that does not implement that condition."""
        try:
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": listed}, IfNoneMatch="*")
        except botocore.exceptions.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code"))
            if code not in ("NotImplemented", "InvalidArgument", "501"):
                raise s3_error(exc, "completing the upload of %s" % key, self.label) from None
            self._call("completing the upload of %s" % key, "complete_multipart_upload", Key=key, UploadId=upload_id, MultipartUpload={"Parts": listed})
        except Exception as exc:  # noqa: BLE001
            raise s3_error(exc, "completing the upload of %s" % key, self.label) from None

    def _check_completed(self, name, parts, total, sha256_parts):
        """StorageError (integrity) unless the completed object has the size and the multipart
        checksum (SHA-256 or MD5 of the parts' digests) of what was sent."""
        landed = self.stat(name, checksum=sha256_parts)
        combined = hashlib.sha256 if sha256_parts else hashlib.md5
        whole = combined(b"".join(p["_digest"] for p in parts)).digest()
        if sha256_parts:
            expected, got = "%s-%d" % (base64.b64encode(whole).decode(), len(parts)), landed and landed.get("checksum_sha256")
        else:
            expected, got = "%s-%d" % (whole.hex(), len(parts)), landed and landed["etag"]
            got = got if got and "-" in got else expected  # a server whose ETag is not the multipart MD5: size only
        if landed is None or landed["size"] != total or got != expected:
            raise StorageError(
                "%s on %s does not match what was sent after completion (size %s, checksum %s; expected %d, %s): remove it and push again"
                % (name, self.label, landed and landed["size"], got, total, expected),
                kind="integrity",
                transient=False,
            )

    def _abort(self, key, upload_id):
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except Exception as exc:  # noqa: BLE001 - the error that made us abort matters more
            self.notes.append("could not abort the unfinished upload of %s: %s" % (key, exc))

    def get(self, name, sink, progress=None):
        """Ranges of RANGE_SIZE fetched by RANGE_WORKERS threads at once, written to ``sink`` in
        order as they complete (at most RANGE_WORKERS ranges in memory)."""
        key = self.key(name)
        found = self.stat(name)
        if found is None:
            raise StorageError("%s is not on %s" % (name, self.label), kind="not_found")
        state = {"done": 0, "sha": hashlib.sha256()}
        throttle = Throttle(self.throttle_kib)

        def once(attempt):
            offsets = iter(range(state["done"], found["size"], RANGE_SIZE))
            with concurrent.futures.ThreadPoolExecutor(max_workers=RANGE_WORKERS) as pool:
                pending = [pool.submit(self._get_range, key, o, min(RANGE_SIZE, found["size"] - o)) for o in itertools.islice(offsets, RANGE_WORKERS)]
                try:
                    while pending:
                        chunk = pending.pop(0).result()
                        sink.write(chunk)
                        state["sha"].update(chunk)
                        state["done"] += len(chunk)
                        throttle(len(chunk))
                        if progress:
                            progress(state["done"], found["size"])
                        for offset in itertools.islice(offsets, 1):
                            pending.append(pool.submit(self._get_range, key, offset, min(RANGE_SIZE, found["size"] - offset)))
                finally:
                    for future in pending:
                        future.cancel()
            if state["done"] != found["size"]:
                raise StorageError("%s: received %d of %d bytes" % (name, state["done"], found["size"]), kind="unreachable")
            return {"name": name, "size": state["done"], "sha256": state["sha"].hexdigest(), "attempts": attempt}

        return self._retrying("downloading %s from %s" % (name, self.label), once)

    def _get_range(self, key, offset, length):
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key, Range="bytes=%d-%d" % (offset, offset + length - 1))["Body"]
            try:
                data = body.read()
            finally:
                body.close()
        except Exception as exc:  # noqa: BLE001
            raise s3_error(exc, "downloading %s" % key, self.label) from None
        if len(data) != length:
            raise StorageError("%s: bytes %d-%d came back with %d bytes" % (key, offset, offset + length - 1, len(data)), kind="unreachable")
        return data

    def read_range(self, name, offset, length):
        if length <= 0:
            return b""
        key = self.key(name)
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key, Range="bytes=%d-%d" % (offset, offset + length - 1))["Body"]
            try:
                return body.read()
            finally:
                body.close()
        except botocore.exceptions.ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) == "InvalidRange":
                return b""
            raise s3_error(exc, "reading %s" % key, self.label) from None
        except Exception as exc:  # noqa: BLE001
            raise s3_error(exc, "reading %s" % key, self.label) from None

    def list(self, prefix=""):
        directory, _sep, _stem = prefix.rpartition("/")
        if directory:
            check_name(directory, "prefix")
        found = []
        token = None
        while True:
            extra = {"ContinuationToken": token} if token else {}
            page = self._call("listing %s" % (self.prefix + prefix), "list_objects_v2", Prefix=self.prefix + prefix, Delimiter="/", **extra)
            for item in page.get("Contents", []):
                name = item["Key"][len(self.prefix) :]
                if posixpath.basename(name).startswith(RESERVED_PREFIX) or not name:
                    continue
                found.append(entry(name, item["Size"], time.mktime(item["LastModified"].utctimetuple())))
            if not page.get("IsTruncated"):
                break
            token = page.get("NextContinuationToken")
        return sorted(found, key=lambda e: e["name"])

    def partials(self, prefix=""):
        uploads = self._call("listing unfinished uploads", "list_multipart_uploads", Prefix=self.prefix + prefix).get("Uploads", [])
        return [entry(u["Key"][len(self.prefix) :], 0, time.mktime(u["Initiated"].utctimetuple()) if u.get("Initiated") else None) for u in uploads]

    def delete(self, name):
        if self.stat(name) is None:
            return False
        self._call("removing %s" % name, "delete_object", Key=self.key(name))
        return True

    def probe(self, write=True):
        try:
            self._call("reaching the bucket", "head_bucket")
        except StorageError as exc:
            if exc.kind == "not_found":
                raise StorageError("%s: the bucket %s does not exist: create it, or fix target.bucket" % (self.label, self.bucket), kind="not_found") from None
            raise
        report = {
            "reachable": True,
            "genuine": True,
            "writable": None,
            "write_error": None,
            "space": None,
            "details": {"bucket": self.bucket},
            "location": self.location,
        }
        if write:
            key = self.prefix + PROBE_KEY
            try:
                self._call("writing a probe object", "put_object", Key=key, Body=b"lifeboat probe\n")
                self._call("removing the probe object", "delete_object", Key=key)
                report["writable"] = True
            except StorageError as exc:
                if exc.kind in ("unreachable", "timeout"):
                    raise
                report["writable"] = False
                report["write_error"] = exc.msg
        return report

    def close(self):
        client, self.client = self.client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001, S110
                pass


def _read_full(fp, size):
    parts, left = [], size
    while left > 0:
        chunk = fp.read(min(left, 1024 * 1024))
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _checksum_options():
    """Newer botocore adds CRC checksums (aws-chunked trailers) that many S3-compatible
    servers reject; ask for them only when an operation requires one."""
    options = {}
    fields = getattr(botocore.config.Config, "OPTION_DEFAULTS", {})
    if "request_checksum_calculation" in fields:
        options.update(request_checksum_calculation="when_required", response_checksum_validation="when_required")
    return options
