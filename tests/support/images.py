"""Real images for tests, made with the collection's own writer (no session, no lock), and
damaged the way a disk, a transfer or a person would."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from ansible_collections.lifeboat.backup.plugins.module_utils import _age, _image, _session


def make_image(
    directory, node="db1", payload=1024 * 1024, backup_id="20261122T194512Z-3fa2c1d0", when=1795000000, passphrase=None, chunk=1024 * 1024, verdict="success"
):
    """Write ``[stamp]-<node>.zip`` into ``directory`` holding one member of ``payload``
    random bytes (or the bytes given), age-encrypted when ``passphrase``; return its path.
    ``verdict`` partial records a second, failed component."""
    name = _image.image_name(node, when)
    recipients, identity_blob = _session.encryption_plan("age" if passphrase else "none", passphrase, None, 10)
    with tempfile.TemporaryDirectory(dir=directory) as work:
        with _image.ImageAppender(work) as appender:
            if identity_blob:
                appender.add_bytes(_image.IDENTITY_MEMBER, "lifeboat", "application/age", identity_blob)
            with appender.add_member("data/blob.bin" + (".age" if recipients else ""), "data", "application/octet-stream", "none", recipients) as member:
                if isinstance(payload, bytes):
                    member.write(payload)
                else:
                    left = payload
                    while left > 0:
                        member.write(os.urandom(min(chunk, left)))
                        left -= chunk
            session = {
                "image": name,
                "backup_id": backup_id,
                "node": node,
                "started": _session.iso(when),
                "halt": False,
                "selection": "standard",
                "components": [],
                "compression": "none",
                "encryption": {
                    "scheme": "age" if passphrase else "none",
                    "recipients": recipients,
                    "passphrase": bool(passphrase),
                    "identity_member": _image.IDENTITY_MEMBER if identity_blob else None,
                },
            }
            components = {"data": {"kind": "files", "status": "success", "members": [e["name"] for e in appender.entries]}}
            if verdict != "success":
                components["postgresql"] = {"kind": "postgresql", "status": "failed", "error": "pg_dump exited 1", "members": []}
            manifest = _session.build_manifest(session, components, appender.entries, _session.iso(when + 60), verdict)
            appender.add_bytes(_image.MANIFEST_NAME, "lifeboat", "application/json", json.dumps(manifest, indent=2).encode())
            appender.finish()
        final = os.path.join(directory, name)
        os.rename(os.path.join(work, "image.partial"), final)
    return final


def member_span(image, member):
    """(offset of the member's stored bytes in the file, their length)."""
    with zipfile.ZipFile(image) as archive:
        info = archive.getinfo(member)
    with open(image, "rb") as handle:
        handle.seek(info.header_offset)
        header = handle.read(30)
    start = info.header_offset + 30 + int.from_bytes(header[26:28], "little") + int.from_bytes(header[28:30], "little")
    return start, info.compress_size


def flip_byte(image, member, target=None, where=0.5):
    """Flip one bit of ``member``'s stored bytes, at ``where`` (a fraction of its length), in
    ``image`` or in a copy of it at ``target`` (damage as a disk or a transfer makes it).
    Returns the damaged file's path."""
    path = Path(image)
    if target is not None:
        shutil.copyfile(image, target)
        path = Path(target)
    start, length = member_span(path, member)
    position = start + min(length - 1, int(length * where))
    with open(path, "r+b") as handle:
        handle.seek(position)
        byte = handle.read(1)
        handle.seek(position)
        handle.write(bytes([byte[0] ^ 0x40]))
    return path


def member_of(image, component, suffix=""):
    """The first member of ``component`` whose name ends with ``suffix``."""
    with zipfile.ZipFile(image) as archive:
        names = [n for n in archive.namelist() if n.startswith(component + "/") and n.endswith(suffix)]
    if not names:
        raise LookupError("no member of %s ending with %r in %s" % (component, suffix, image))
    return names[0]


__all__ = ["make_image", "flip_byte", "member_of", "member_span", "_age"]


def rewrite_manifest(image, target, change):
    """A copy of ``image`` whose manifest.json went through ``change`` (members untouched)."""
    with zipfile.ZipFile(image) as source, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as copy:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename == "manifest.json":
                manifest = json.loads(data)
                change(manifest)
                data = json.dumps(manifest).encode()
            copy.writestr(info, data)
