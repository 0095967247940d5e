"""Real images for storage tests, made with the collection's own writer (no session, no lock)."""

from __future__ import annotations

import json
import os
import tempfile

from ansible_collections.lifeboat.backup.plugins.module_utils import _age, _image, _session


def make_image(directory, node="db1", payload=1024 * 1024, backup_id="20261122T194512Z-3fa2c1d0", when=1795000000, passphrase=None, chunk=1024 * 1024):
    """Write ``[stamp]-<node>.zip`` into ``directory`` holding one member of ``payload``
    random bytes (or the bytes given), age-encrypted when ``passphrase``; return its path."""
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
            manifest = _session.build_manifest(session, components, appender.entries, _session.iso(when + 60), "success")
            appender.add_bytes(_image.MANIFEST_NAME, "lifeboat", "application/json", json.dumps(manifest, indent=2).encode())
            appender.finish()
        final = os.path.join(directory, name)
        os.rename(os.path.join(work, "image.partial"), final)
    return final


__all__ = ["make_image", "_age"]
