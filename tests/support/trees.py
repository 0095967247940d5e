"""Configuration-like trees for tests, and a strict comparison of two trees."""

from __future__ import annotations

import os
import stat
from pathlib import Path

PASSPHRASE = "correct horse battery staple"


def make_config_tree(root: Path) -> Path:
    """A small /etc-like tree exercising what config_archive must preserve."""
    etc = root / "etc" / "platform"
    (etc / "conf.d").mkdir(parents=True)
    (etc / "empty.d").mkdir()
    (etc / "ssl" / "private").mkdir(parents=True)
    (etc / "platform_settings.py").write_text("SECRET_KEY = 'hunter2'\nDEBUG = False\n")
    (etc / "conf.d" / "10-listen.conf").write_text("listen 443;\n")
    (etc / "conf.d" / "name with spaces.conf").write_text("x = 1\n")
    (etc / "conf.d" / "unicodé-é.conf").write_text("ü = 1\n")
    long_dir = etc / ("d" * 60) / ("e" * 60)
    long_dir.mkdir(parents=True)
    (long_dir / "long-path.conf").write_text("deep\n")
    key = etc / "ssl" / "private" / "server.key"
    key.write_bytes(os.urandom(2048))
    os.chmod(key, 0o600)
    os.chmod(etc / "ssl" / "private", 0o700)
    os.chown(etc / "conf.d" / "10-listen.conf", 1, 1)  # daemon:daemon
    os.symlink("10-listen.conf", etc / "conf.d" / "current.conf")
    os.symlink("/nonexistent/target", etc / "dangling")
    os.utime(etc / "platform_settings.py", (1_600_000_000, 1_600_000_000))
    (etc / "editor.swp").write_text("swap")
    return etc


def snapshot(root: Path, relative_to: Path | None = None) -> dict:
    """Path -> (type, mode, uid, gid, mtime, content or link target) for a whole tree."""
    result = {}
    base = relative_to or root
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = os.lstat(path)
            rel = str(path.relative_to(base))
            if stat.S_ISLNK(st.st_mode):
                result[rel] = ("symlink", os.readlink(path), st.st_uid, st.st_gid)
            elif stat.S_ISDIR(st.st_mode):
                result[rel] = ("directory", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
            else:
                result[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, int(st.st_mtime), path.read_bytes())
    return result
