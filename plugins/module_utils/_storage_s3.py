# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE module_utils of lifeboat.backup: not a public API, may change without notice.
"""Storage target ``type: s3``: S3-compatible object storage with boto3, any endpoint.

An object store has no rename, but a multipart upload is invisible until it is
completed, and completion is atomic: that is the temporary name. Each part is sent with
its ``Content-MD5``, which the server checks on receipt (a part that arrives damaged is
refused), and the completed object's size and multipart ETag are compared with what was
sent. The whole object's SHA-256 goes into its metadata (``x-amz-meta-sha256``) and the
sidecar. A retried upload lists the parts already on the server and sends only the ones
that are missing or differ. An existing key is never replaced: it is checked before the
upload and again before completion, and completion asks for ``If-None-Match: *`` where the
server understands it. Object stores have no free space to report.
"""

from __future__ import annotations

import base64
import hashlib
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

BOTO3_IMPORT_ERROR = None
try:
    import boto3
    import botocore.config
    import botocore.exceptions

    HAS_BOTO3 = True
except ImportError:
    HAS_BOTO3 = False
    BOTO3_IMPORT_ERROR = traceback.format_exc()

PART_SIZE = 16 * 1024 * 1024
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
    verification = "server-md5-parts"

    def __init__(self, target):
        super().__init__(target)
        if not HAS_BOTO3:
            raise StorageError(
                "type s3 needs the Python library boto3 on this node (pip install boto3, or python3-boto3)", kind="unsupported", exception=BOTO3_IMPORT_ERROR
            )
        self.bucket = target["bucket"]
        prefix = (target.get("path") or "").strip("/")
        self.prefix = prefix + "/" if prefix else ""
        timeout = target.get("timeout") or 30
        config = botocore.config.Config(
            s3={"addressing_style": target.get("addressing_style") or "auto"},
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

    def stat(self, name):
        key = self.key(name)
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except botocore.exceptions.ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise s3_error(exc, "stat of %s" % key, self.label) from None
        except Exception as exc:  # noqa: BLE001
            raise s3_error(exc, "stat of %s" % key, self.label) from None
        found = entry(name, head["ContentLength"], time.mktime(head["LastModified"].utctimetuple()) if head.get("LastModified") else None)
        found["etag"] = head.get("ETag", "").strip('"')
        found["sha256"] = (head.get("Metadata") or {}).get("sha256")
        return found

    def put(self, name, source, size=None, progress=None):
        key = self.key(name)
        started = time.monotonic()
        if self.stat(name) is not None:
            raise StorageError("%s already exists on %s; an existing copy is never overwritten" % (name, self.label), kind="exists")
        src = Source(source, size)
        try:
            whole = src.rewind(src.size).hexdigest() if src.seekable and src.size is not None else None
            state = {"resumed_parts": 0}
            record = self._retrying("uploading %s to %s" % (name, self.label), lambda attempt: self._upload(name, key, src, whole, progress, state, attempt))
        finally:
            src.close()
        record.update(seconds=round(time.monotonic() - started, 3), resumed_from=state["resumed_parts"])
        return record

    def _part_size(self, size):
        if size is None:
            return PART_SIZE
        return max(PART_SIZE, -(-size // MAX_PARTS))

    def _upload(self, name, key, src, whole, progress, state, attempt):
        if attempt > 1 and not src.seekable:
            raise StorageError("the upload of %s failed and its source is a stream that cannot be read again" % name, kind="unreachable", transient=False)
        upload_id, existing = self._find_upload(key, whole)
        if upload_id is None:
            metadata = {"sha256": whole} if whole else {}
            upload_id = self._call("starting the upload of %s" % key, "create_multipart_upload", Key=key, Metadata=metadata)["UploadId"]
        try:
            parts, sha, total = self._send_parts(key, upload_id, src, existing, progress, state)
            self._complete(name, key, upload_id, parts, total)
        except StorageError as exc:
            if not exc.transient:
                self._abort(key, upload_id)
            raise
        digest = sha.hexdigest()
        if whole and digest != whole:
            raise StorageError("the source of %s changed while being uploaded" % name, kind="integrity", transient=False)
        return {"name": name, "size": total, "sha256": digest, "verified": self.verification, "attempts": attempt, "location": self.location}

    def _find_upload(self, key, whole):
        """An unfinished upload of this key (same content) to resume, with its parts."""
        uploads = self._call("listing unfinished uploads", "list_multipart_uploads", Prefix=key).get("Uploads", [])
        for upload in uploads:
            if upload.get("Key") != key:
                continue
            parts = {}
            marker = 0
            while True:
                page = self._call("listing uploaded parts", "list_parts", Key=key, UploadId=upload["UploadId"], PartNumberMarker=marker)
                for part in page.get("Parts", []):
                    parts[part["PartNumber"]] = (part["Size"], part["ETag"].strip('"'))
                if not page.get("IsTruncated"):
                    break
                marker = page["NextPartNumberMarker"]
            return upload["UploadId"], parts
        return None, {}

    def _send_parts(self, key, upload_id, src, existing, progress, state):
        part_size = self._part_size(src.size)
        throttle = Throttle(self.throttle_kib)
        sha = src.rewind(0) if src.seekable else hashlib.sha256()
        parts, total, number = [], 0, 1
        while True:
            data = _read_full(src.fp, part_size)
            if not data and number > 1:
                break
            sha.update(data)
            md5 = hashlib.md5(data)  # noqa: S324 - Content-MD5 is what S3 servers check parts with
            etag = md5.hexdigest()
            if existing.get(number) == (len(data), etag):
                state["resumed_parts"] += 1
            else:
                answer = self._call(
                    "uploading part %d of %s" % (number, key),
                    "upload_part",
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=data,
                    ContentMD5=base64.b64encode(md5.digest()).decode(),
                )
                returned = answer.get("ETag", "").strip('"')
                if returned and len(returned) == 32 and returned != etag:
                    raise StorageError(
                        "part %d of %s: the server stored other bytes than were sent (ETag %s, MD5 %s)" % (number, key, returned, etag),
                        kind="integrity",
                        transient=True,
                    )
                throttle(len(data))
            parts.append({"PartNumber": number, "ETag": '"%s"' % etag, "_md5": md5.digest()})
            total += len(data)
            if progress:
                progress(total, src.size)
            if len(data) < part_size:
                break
            number += 1
        return parts, sha, total

    def _complete(self, name, key, upload_id, parts, total):
        if self.stat(name) is not None:
            self._abort(key, upload_id)
            raise StorageError("%s appeared on %s during the upload; the existing copy was left as it is" % (name, self.label), kind="exists")
        listed = [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in parts]
        try:
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": listed}, IfNoneMatch="*")
        except botocore.exceptions.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code"))
            if code in ("NotImplemented", "InvalidArgument", "501"):
                self._call("completing the upload of %s" % key, "complete_multipart_upload", Key=key, UploadId=upload_id, MultipartUpload={"Parts": listed})
            else:
                raise s3_error(exc, "completing the upload of %s" % key, self.label) from None
        except Exception as exc:  # noqa: BLE001
            raise s3_error(exc, "completing the upload of %s" % key, self.label) from None
        landed = self.stat(name)
        expected = "%s-%d" % (hashlib.md5(b"".join(p["_md5"] for p in parts)).hexdigest(), len(parts))  # noqa: S324
        if landed is None or landed["size"] != total or ("-" in landed["etag"] and landed["etag"] != expected):
            raise StorageError(
                "%s on %s does not match what was sent after completion (size %s, ETag %s; expected %d, %s): remove it and push again"
                % (name, self.label, landed and landed["size"], landed and landed["etag"], total, expected),
                kind="integrity",
                transient=False,
            )

    def _abort(self, key, upload_id):
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except Exception as exc:  # noqa: BLE001 - the error that made us abort matters more
            self.notes.append("could not abort the unfinished upload of %s: %s" % (key, exc))

    def get(self, name, sink, progress=None):
        key = self.key(name)
        found = self.stat(name)
        if found is None:
            raise StorageError("%s is not on %s" % (name, self.label), kind="not_found")
        state = {"done": 0, "sha": hashlib.sha256()}
        throttle = Throttle(self.throttle_kib)

        def once(attempt):
            extra = {"Range": "bytes=%d-" % state["done"]} if state["done"] else {}
            body = self._call("downloading %s" % key, "get_object", Key=key, **extra)["Body"]
            try:
                while True:
                    chunk = body.read(1024 * 1024)
                    if not chunk:
                        break
                    sink.write(chunk)
                    state["sha"].update(chunk)
                    state["done"] += len(chunk)
                    throttle(len(chunk))
                    if progress:
                        progress(state["done"], found["size"])
            except Exception as exc:  # noqa: BLE001
                raise s3_error(exc, "downloading %s" % key, self.label) from None
            finally:
                body.close()
            if state["done"] != found["size"]:
                raise StorageError("%s: received %d of %d bytes" % (name, state["done"], found["size"]), kind="unreachable")
            return {"name": name, "size": state["done"], "sha256": state["sha"].hexdigest(), "attempts": attempt}

        return self._retrying("downloading %s from %s" % (name, self.label), once)

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
