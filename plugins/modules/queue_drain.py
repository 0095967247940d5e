#!/usr/bin/python
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: queue_drain
short_description: Report, wait for and purge Redis work queues before a backup
version_added: 0.1.0
description:
  - Reports the length of each Redis key listed in O(queues) (C(LLEN) for lists, the work
    queues of Celery/kombu, RQ and most Redis-backed task runners; C(ZCARD), C(HLEN),
    C(SCARD), C(XLEN) for the other types). A key that does not exist is an empty queue.
  - With O(wait=true), polls until every listed queue is empty or O(timeout) passes. On
    timeout it fails and says which queues still hold how many items.
  - With O(purge), deletes exactly the keys named there and returns how many items each
    held when it was deleted (read and deleted in one C(MULTI) transaction). Names are
    never expanded as patterns unless O(allow_pattern=true).
  - Order of work - purge first, then wait, then the final lengths, which are the queue
    lengths at the cut (RV(lengths)) recorded as consistency marker.
  - Reading and waiting never report a change; only an actual purge does.
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
extends_documentation_fragment:
  - lifeboat.backup._attributes
  - lifeboat.backup._redis
attributes:
  check_mode:
    support: full
    details: Reports the lengths and what O(purge) would discard; deletes nothing and does not wait.
  diff_mode:
    support: none
options:
  queues:
    description:
      - Keys of the queues to report and wait for, exactly as stored in Redis.
      - Celery with the Redis broker keeps one list per queue, named after the queue
        (C(celery) by default); with priorities it adds C(<queue>\x06\x16<priority>) keys
        (for example C(celery\x06\x163)), and unacknowledged tasks in the hash C(unacked).
    type: list
    elements: str
    default: []
  wait:
    description:
      - Poll until every queue in O(queues) is empty, failing after O(timeout) seconds.
    type: bool
    default: false
  timeout:
    description:
      - With O(wait=true), seconds to wait for the queues to empty.
    type: int
    default: 300
  interval:
    description:
      - With O(wait=true), seconds between two polls.
    type: float
    default: 1.0
  purge:
    description:
      - Keys to delete, each named exactly. A key that does not exist is skipped.
      - The items they held are lost; this is the C(del "queue:...") step of the vendor
        procedure for queues that must not survive a shutdown. List only what you mean.
      - A name containing C(*), C(?) or C([) is refused unless O(allow_pattern=true).
    type: list
    elements: str
    default: []
  allow_pattern:
    description:
      - Treat the O(purge) entries as Redis glob patterns (C(SCAN MATCH)) and delete every
        key they match. Off by default so that a typo cannot empty the wrong queues.
    type: bool
    default: false
notes:
  - The module never uses C(KEYS) or C(FLUSHDB); patterns are expanded with C(SCAN).
seealso:
  - module: lifeboat.backup.backup_session
  - name: Quiescing a platform (docs/quiesce.md)
    description: The quiesce role stops services in order and drains the queues between the steps.
    link: https://github.com/lifeboat-backup/lifeboat.backup/blob/main/docs/quiesce.md
"""

EXAMPLES = r"""
- name: How many tasks are queued? (read-only, never changed)
  lifeboat.backup.queue_drain:
    login_host: 127.0.0.1
    login_password: "{{ vault_redis_password }}"
    queues: [enrichers, integrations, priority_enrichers, priority_providers, priority_utilities, providers, reindexing, utilities]
  register: queues

- name: Wait up to 10 minutes for the Celery workers to empty their queues
  lifeboat.backup.queue_drain:
    login_unix_socket: /run/redis/redis.sock
    db: 0
    login_password: "{{ vault_redis_password }}"
    queues: [celery, "celery\x06\x163", "celery\x06\x166", "celery\x06\x169"]
    wait: true
    timeout: 600

- name: Discard the ingestion queues the vendor says to delete, then check the others
  lifeboat.backup.queue_drain:
    login_host: redis.internal
    tls: true
    ca_certs: /etc/ssl/certs/internal-ca.pem
    login_user: backup
    login_password: "{{ vault_redis_password }}"
    purge: ["queue:ingestion:inbound", "queue:graph:inbound", "queue:search:inbound"]
    queues: [enrichers, utilities]
    wait: true
    timeout: 120
"""

RETURN = r"""
lengths:
  description: Length of each key of O(queues) when the module finished (after the purge and the wait); the queue lengths at the cut.
  returned: always
  type: dict
  sample: {enrichers: 0, utilities: 3}
initial_lengths:
  description: Length of each key of O(queues) when the module started.
  returned: always
  type: dict
  sample: {enrichers: 12, utilities: 3}
types:
  description: Redis type of each key of O(queues) (C(none) when it does not exist).
  returned: always
  type: dict
  sample: {enrichers: list, utilities: none}
total:
  description: Sum of RV(lengths).
  returned: always
  type: int
  sample: 3
empty:
  description: Whether every queue of O(queues) was empty at the end.
  returned: always
  type: bool
  sample: false
pending:
  description: The queues that still held items at the end, with their lengths.
  returned: always
  type: dict
  sample: {utilities: 3}
purged:
  description: Each deleted key (or, in check mode, each key that would be deleted) with the number of items it held.
  returned: always
  type: dict
  sample: {"queue:ingestion:inbound": 120}
discarded:
  description: Total number of items deleted by O(purge) (would be, in check mode).
  returned: always
  type: int
  sample: 120
waited:
  description: Seconds spent waiting for the queues to empty.
  returned: always
  type: float
  sample: 4.2
timed_out:
  description: Whether O(wait) gave up after O(timeout) seconds.
  returned: always
  type: bool
  sample: false
polls:
  description: Number of times the lengths were read while waiting.
  returned: always
  type: int
  sample: 5
lifeboat_succeeded:
  description:
    - C(true) in every successful result of a lifeboat.backup module, absent from every failure.
    - The roles run modules with C(failed_when) false and count every result without it (a failure, a crash,
      a timeout) as failed; see docs/architecture.md, section Module result contract.
  returned: success
  type: bool
  sample: true
  version_added: 0.2.0
"""

import time

from ansible_collections.lifeboat.backup.plugins.module_utils import _redis
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import LifeboatError, OptionError
from ansible_collections.lifeboat.backup.plugins.module_utils._module import LifeboatModule

GLOB_CHARS = ("*", "?", "[")
# Commands that count the items of a key, by the key's Redis type.
LENGTH_COMMANDS = {"list": "LLEN", "zset": "ZCARD", "hash": "HLEN", "set": "SCARD", "stream": "XLEN"}


class QueueError(LifeboatError):
    """A key that holds no queue, or a purge entry the module will not expand."""


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def key_type(client, key):
    return _text(client.type(key))


def key_length(client, key):
    """(type, length) of a key; a missing key is an empty queue."""
    kind = key_type(client, key)
    if kind == "none":
        return kind, 0
    command = LENGTH_COMMANDS.get(kind)
    if command is None:
        raise QueueError(f"key {key!r} is a Redis {kind}, which holds no queue items; list only queue keys in queues")
    return kind, int(client.execute_command(command, key))


def measure(client, keys):
    types = {}
    lengths = {}
    for key in keys:
        types[key], lengths[key] = key_length(client, key)
    return types, lengths


def expand_purge(client, params):
    """The exact keys to delete, in the order given (patterns expanded only when allowed)."""
    keys = []
    for entry in params["purge"]:
        if any(char in entry for char in GLOB_CHARS):
            if not params["allow_pattern"]:
                raise QueueError(
                    f"purge: {entry!r} looks like a pattern; purge deletes only keys named exactly. Name each key, or set allow_pattern=true "
                    "to delete every key the pattern matches"
                )
            matched = sorted(_text(k) for k in client.scan_iter(match=entry, count=1000))
            keys.extend(k for k in matched if k not in keys)
        elif entry not in keys:
            keys.append(entry)
    return keys


def purge_keys(client, keys, check_mode):
    """Delete each key, counting its items in the same transaction. Returns {key: items}."""
    purged = {}
    for key in keys:
        kind = key_type(client, key)
        if kind == "none":
            continue
        command = LENGTH_COMMANDS.get(kind)
        if command is None:
            raise QueueError(f"purge: key {key!r} is a Redis {kind}, not a queue; nothing was deleted from it. Name only queue keys in purge")
        if check_mode:
            purged[key] = int(client.execute_command(command, key))
            continue
        pipe = client.pipeline(transaction=True)
        pipe.execute_command(command, key)
        pipe.delete(key)
        length, deleted = pipe.execute()
        if deleted:
            purged[key] = int(length)
    return purged


def validate(params):
    if not params["queues"] and not params["purge"]:
        raise OptionError("queues", "nothing to do: give the queue keys to report or wait for in queues, and/or the keys to delete in purge")
    if params["wait"] and not params["queues"]:
        raise OptionError("wait", "wait=true needs the keys to wait for in queues")
    if params["timeout"] < 0 or params["interval"] <= 0:
        raise OptionError("timeout", "timeout must be 0 or more and interval more than 0 seconds")


def empty_result():
    return {
        "changed": False,
        "lengths": {},
        "initial_lengths": {},
        "types": {},
        "total": 0,
        "empty": True,
        "pending": {},
        "purged": {},
        "discarded": 0,
        "waited": 0.0,
        "timed_out": False,
        "polls": 0,
    }


def wait_until_empty(client, params, lengths, result):
    """Poll until every queue is empty or the timeout passes; returns the last (types, lengths)."""
    types = result["types"]
    deadline = time.monotonic() + params["timeout"]
    while any(lengths.values()):
        if time.monotonic() >= deadline:
            result["timed_out"] = True
            break
        time.sleep(min(params["interval"], max(0.0, deadline - time.monotonic())))
        types, lengths = measure(client, params["queues"])
        result["polls"] += 1
    return types, lengths


def drain(client, params, check_mode, result):
    """Measure, purge, wait; fills ``result`` as it goes (so a failure returns what was done)."""
    types, lengths = measure(client, params["queues"])
    result.update(types=types, initial_lengths=dict(lengths), lengths=lengths)
    keys = expand_purge(client, params) if params["purge"] else []
    purged = purge_keys(client, keys, check_mode)
    result.update(purged=purged, discarded=sum(purged.values()), changed=bool(purged))
    if purged and not check_mode:
        types, lengths = measure(client, params["queues"])
        result["types"] = types
    started = time.monotonic()
    if params["wait"] and not check_mode:
        types, lengths = wait_until_empty(client, params, lengths, result)
    result["waited"] = round(time.monotonic() - started, 3)
    pending = {key: length for key, length in lengths.items() if length}
    result.update(types=types, lengths=lengths, total=sum(lengths.values()), empty=not pending, pending=pending)


def run(module):
    params = module.params
    module.require("redis", _redis.HAS_REDIS, _redis.REDIS_IMPORT_ERROR)
    validate(params)
    result = module.keep(empty_result())  # what was measured or purged is returned with a failure too
    try:
        client = _redis.connect(params)
        drain(client, params, module.check_mode, result)
    except _redis.redis.RedisError as exc:
        raise _redis.failure(exc, params, **result) from None
    if result["timed_out"]:
        listing = ", ".join(f"{key} has {n} item{'' if n == 1 else 's'}" for key, n in result["pending"].items())
        raise QueueError(
            f"queues not empty after waiting {params['timeout']} s: {listing}. Are the workers that consume them still running? "
            "Raise timeout, or name the queues to discard in purge",
            **result,
        )
    return result


def main():
    module = LifeboatModule(
        argument_spec=dict(
            queues=dict(type="list", elements="str", default=[]),
            wait=dict(type="bool", default=False),
            timeout=dict(type="int", default=300),
            interval=dict(type="float", default=1.0),
            purge=dict(type="list", elements="str", default=[]),
            allow_pattern=dict(type="bool", default=False),
        ),
        specs=[_redis.CONNECTION_SPEC],
        required_by=_redis.CONNECTION_REQUIRED_BY,
        supports_check_mode=True,
    )
    module.run(run)


if __name__ == "__main__":
    main()
