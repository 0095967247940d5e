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
attributes:
  check_mode:
    support: full
    details: Reports the lengths and what O(purge) would discard; deletes nothing and does not wait.
  diff_mode:
    support: none
options:
  host:
    description:
      - Redis server host name or address. Ignored with O(unix_socket).
    type: str
    default: localhost
  port:
    description:
      - Redis server TCP port.
    type: int
    default: 6379
  unix_socket:
    description:
      - Path of the Redis unix socket. Used instead of O(host) and O(port) when set.
    type: path
  db:
    description:
      - Redis database number. Celery uses the number at the end of its broker URL
        (C(redis://host:6379/0) is database 0).
    type: int
    default: 0
  username:
    description:
      - ACL user name (Redis 6 and later). Omit to authenticate with O(password) only
        (the C(default) user, or C(requirepass)).
    type: str
  password:
    description:
      - Password for C(AUTH). Never logged, never returned.
    type: str
  tls:
    description:
      - Connect with TLS (C(rediss://)).
    type: bool
    default: false
  validate_certs:
    description:
      - With O(tls), verify the server certificate and host name. Turn off only for a test
        server with a self-signed certificate you do not have the CA of.
    type: bool
    default: true
  ca_certs:
    description:
      - With O(tls), path of the CA bundle (PEM) the server certificate is checked against.
        Default is the system trust store.
    type: path
  client_cert:
    description:
      - With O(tls), path of a client certificate (PEM) for servers that require one.
    type: path
  client_key:
    description:
      - With O(tls), path of the private key of O(client_cert).
    type: path
  connect_timeout:
    description:
      - Seconds to wait for the connection and for each command.
    type: float
    default: 10
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
requirements:
  - redis (the redis-py Python library, on the managed node).
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
    host: 127.0.0.1
    password: "{{ vault_redis_password }}"
    queues: [enrichers, integrations, priority_enrichers, priority_providers, priority_utilities, providers, reindexing, utilities]
  register: queues

- name: Wait up to 10 minutes for the Celery workers to empty their queues
  lifeboat.backup.queue_drain:
    unix_socket: /run/redis/redis.sock
    db: 0
    password: "{{ vault_redis_password }}"
    queues: [celery, "celery\x06\x163", "celery\x06\x166", "celery\x06\x169"]
    wait: true
    timeout: 600

- name: Discard the ingestion queues the vendor says to delete, then check the others
  lifeboat.backup.queue_drain:
    host: redis.internal
    tls: true
    ca_certs: /etc/ssl/certs/internal-ca.pem
    username: backup
    password: "{{ vault_redis_password }}"
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
"""

import time
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

REDIS_IMPORT_ERROR = None
try:
    import redis

    HAS_REDIS = True
    try:
        from redis.backoff import NoBackoff
        from redis.retry import Retry
    except ImportError:  # redis-py < 4.1 does not retry anyway
        Retry = None
except ImportError:
    HAS_REDIS = False
    REDIS_IMPORT_ERROR = traceback.format_exc()

GLOB_CHARS = ("*", "?", "[")
# Commands that count the items of a key, by the key's Redis type.
LENGTH_COMMANDS = {"list": "LLEN", "zset": "ZCARD", "hash": "HLEN", "set": "SCARD", "stream": "XLEN"}


class QueueError(Exception):
    pass


def describe_server(params):
    if params["unix_socket"]:
        return f"unix socket {params['unix_socket']}"
    return f"{params['host']}:{params['port']}"


def connect(params):
    kwargs = {
        "db": params["db"],
        "username": params["username"],
        "password": params["password"],
        "socket_timeout": params["connect_timeout"],
        "socket_connect_timeout": params["connect_timeout"],
        "decode_responses": False,
    }
    if params["unix_socket"]:
        kwargs["unix_socket_path"] = params["unix_socket"]
    else:
        kwargs.update(host=params["host"], port=params["port"])
    if params["tls"]:
        kwargs.update(
            ssl=True,
            ssl_cert_reqs="required" if params["validate_certs"] else "none",
            ssl_check_hostname=params["validate_certs"],
            ssl_ca_certs=params["ca_certs"],
            ssl_certfile=params["client_cert"],
            ssl_keyfile=params["client_key"],
        )
    if Retry is not None:
        # redis-py retries a refused connection for seconds by default; fail at once and say why.
        kwargs["retry"] = Retry(NoBackoff(), 0)
    client = redis.Redis(**kwargs)
    client.ping()
    return client


def redis_failure(exc, params):
    """A clear message for a connection-level failure (never includes the password)."""
    where = describe_server(params)
    detail = str(exc).rstrip(".")
    if isinstance(exc, redis.AuthenticationError) or "WRONGPASS" in str(exc) or "NOAUTH" in str(exc):
        return f"Redis at {where} refused the credentials: {detail}; check username and password"
    if isinstance(exc, redis.ConnectionError):
        hint = "check host/port or unix_socket, and that Redis is running"
        if params["tls"]:
            hint += " (tls=true: the server must listen with TLS on that port; check ca_certs/validate_certs)"
        return f"cannot connect to Redis at {where}: {detail}; {hint}"
    if isinstance(exc, redis.TimeoutError):
        return f"Redis at {where} did not answer within {params['connect_timeout']} s: {exc}"
    return f"Redis at {where}: {exc}"


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


def main():
    module = AnsibleModule(
        argument_spec={
            "host": {"type": "str", "default": "localhost"},
            "port": {"type": "int", "default": 6379},
            "unix_socket": {"type": "path"},
            "db": {"type": "int", "default": 0},
            "username": {"type": "str"},
            "password": {"type": "str", "no_log": True},
            "tls": {"type": "bool", "default": False},
            "validate_certs": {"type": "bool", "default": True},
            "ca_certs": {"type": "path"},
            "client_cert": {"type": "path"},
            "client_key": {"type": "path", "no_log": False},
            "connect_timeout": {"type": "float", "default": 10},
            "queues": {"type": "list", "elements": "str", "default": []},
            "wait": {"type": "bool", "default": False},
            "timeout": {"type": "int", "default": 300},
            "interval": {"type": "float", "default": 1.0},
            "purge": {"type": "list", "elements": "str", "default": []},
            "allow_pattern": {"type": "bool", "default": False},
        },
        required_by={"client_key": "client_cert"},
        supports_check_mode=True,
    )
    params = module.params
    if not HAS_REDIS:
        module.fail_json(msg=missing_required_lib("redis"), exception=REDIS_IMPORT_ERROR)
    if not params["queues"] and not params["purge"]:
        module.fail_json(msg="nothing to do: give the queue keys to report or wait for in queues, and/or the keys to delete in purge")
    if params["wait"] and not params["queues"]:
        module.fail_json(msg="wait=true needs the keys to wait for in queues")
    if params["timeout"] < 0 or params["interval"] <= 0:
        module.fail_json(msg="timeout must be 0 or more and interval more than 0 seconds")

    result = {
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
    try:
        client = connect(params)
    except redis.RedisError as exc:
        module.fail_json(msg=redis_failure(exc, params), **result)

    try:
        types, lengths = measure(client, params["queues"])
        result.update(types=types, initial_lengths=dict(lengths), lengths=lengths)
        keys = expand_purge(client, params) if params["purge"] else []
        purged = purge_keys(client, keys, module.check_mode)
        result.update(purged=purged, discarded=sum(purged.values()), changed=bool(purged))
        if purged and not module.check_mode:
            types, lengths = measure(client, params["queues"])
        started = time.monotonic()
        if params["wait"] and not module.check_mode:
            deadline = started + params["timeout"]
            while any(lengths.values()):
                if time.monotonic() >= deadline:
                    result["timed_out"] = True
                    break
                time.sleep(min(params["interval"], max(0.0, deadline - time.monotonic())))
                types, lengths = measure(client, params["queues"])
                result["polls"] += 1
        result["waited"] = round(time.monotonic() - started, 3)
    except QueueError as exc:
        module.fail_json(msg=str(exc), **result)
    except redis.RedisError as exc:
        module.fail_json(msg=redis_failure(exc, params), **result)

    pending = {key: length for key, length in lengths.items() if length}
    result.update(types=types, lengths=lengths, total=sum(lengths.values()), empty=not pending, pending=pending)
    if result["timed_out"]:
        listing = ", ".join(f"{key} has {n} item{'' if n == 1 else 's'}" for key, n in pending.items())
        module.fail_json(
            msg=f"queues not empty after waiting {params['timeout']} s: {listing}. Are the workers that consume them still running? "
            "Raise timeout, or name the queues to discard in purge",
            **result,
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
