"""Generate a reproducible text-like tree: mixed file sizes, many small files, a few big ones.

usage: python gen_tree.py DEST SIZE_MIB [SEED]
The content is drawn from a pseudo-random word stream, so it compresses like logs and
configuration (roughly 5x with zstd -3), not like random bytes or repeated blocks.
"""

import os
import random
import sys

WORDS = [
    "server",
    "listen",
    "port",
    "proxy",
    "upstream",
    "timeout",
    "error",
    "warning",
    "info",
    "debug",
    "user",
    "group",
    "allow",
    "deny",
    "include",
    "path",
    "root",
    "index",
    "location",
    "cache",
    "buffer",
    "worker",
    "process",
    "thread",
    "queue",
    "broker",
    "celery",
    "postgres",
    "elastic",
    "neo4j",
    "redis",
    "config",
    "value",
    "true",
    "false",
    "none",
    "null",
    "enable",
    "disable",
    "host",
    "name",
    "address",
    "network",
    "interface",
    "route",
    "gateway",
    "certificate",
    "key",
    "secret",
    "token",
    "session",
    "cookie",
    "header",
]


def corpus(rng, size):
    out = []
    total = 0
    while total < size:
        line = " ".join(rng.choice(WORDS) for _word in range(rng.randint(3, 12)))
        line += " = %d;\n" % rng.randint(0, 10 ** rng.randint(1, 9))
        out.append(line)
        total += len(line)
    return "".join(out).encode()


def main():
    dest, size_mib = sys.argv[1], int(sys.argv[2])
    rng = random.Random(int(sys.argv[3]) if len(sys.argv) > 3 else 42)
    text = corpus(rng, 64 * 1024 * 1024)
    target = size_mib * 1024 * 1024
    written = 0
    count = 0
    while written < target:
        # 90 % small (config-like), 9.8 % medium, 0.2 % large (logs, dumps):
        # about 17 000 files per GiB.
        roll = rng.random()
        if roll < 0.90:
            size = rng.randint(64, 16 * 1024)
        elif roll < 0.998:
            size = rng.randint(16 * 1024, 512 * 1024)
        else:
            size = rng.randint(4, 24) * 1024 * 1024
        size = max(1, min(size, target - written))
        directory = os.path.join(dest, "d%03d" % (count % 97), "s%02d" % (count % 13))
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "f%06d.conf" % count), "wb") as handle:
            remaining = size
            while remaining:
                piece = min(remaining, 8 * 1024 * 1024)
                start = rng.randrange(0, len(text) - piece)
                handle.write(text[start : start + piece])
                remaining -= piece
        written += size
        count += 1
    print("files=%d bytes=%d" % (count, written))


if __name__ == "__main__":
    main()
