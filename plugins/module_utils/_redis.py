# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE module_utils of lifeboat.backup: not a public API, may change without notice.
"""Redis connection shared by the modules that talk to Redis (queue_drain).

The options follow community.general's Redis fragment and this collection's PostgreSQL
options: ``login_*``, ``tls``, ``validate_certs``, ``ca_certs``, ``client_cert_file``,
``client_key_file`` (doc fragment ``lifeboat.backup._redis``). The names of 0.1.0 stay as
deprecated aliases until 0.3.0.
"""

from __future__ import annotations

import traceback

from ansible_collections.lifeboat.backup.plugins.module_utils._errors import LifeboatError
from ansible_collections.lifeboat.backup.plugins.module_utils._version import COLLECTION

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
    redis = None
    HAS_REDIS = False
    REDIS_IMPORT_ERROR = traceback.format_exc()

ALIASES_REMOVED_IN = "0.3.0"


def _renamed(old, **option):
    """An option whose 0.1.0 name ``old`` stays as a deprecated alias for one release."""
    option["aliases"] = [old]
    option["deprecated_aliases"] = [dict(name=old, version=ALIASES_REMOVED_IN, collection_name=COLLECTION)]
    return option


# Defined once beside the doc fragment (plugins/doc_fragments/_redis.py).
CONNECTION_SPEC = dict(
    login_host=_renamed("host", type="str", default="localhost"),
    login_port=_renamed("port", type="int", default=6379),
    login_unix_socket=_renamed("unix_socket", type="path"),
    db=dict(type="int", default=0),
    login_user=_renamed("username", type="str"),
    login_password=_renamed("password", type="str", no_log=True),
    tls=dict(type="bool", default=False),
    validate_certs=dict(type="bool", default=True),
    ca_certs=dict(type="path"),
    client_cert_file=_renamed("client_cert", type="path"),
    client_key_file=_renamed("client_key", type="path", no_log=False),
    connect_timeout=dict(type="float", default=10),
)
CONNECTION_REQUIRED_BY = {"client_key_file": "client_cert_file"}


class RedisError(LifeboatError):
    """Redis refused, could not be reached, or answered something unusable."""


def describe_server(params):
    if params["login_unix_socket"]:
        return "unix socket %s" % params["login_unix_socket"]
    return "%s:%s" % (params["login_host"], params["login_port"])


def client_kwargs(params):
    """redis.Redis keyword arguments for the CONNECTION_SPEC options (the password as a value)."""
    kwargs = {
        "db": params["db"],
        "username": params["login_user"],
        "password": params["login_password"],
        "socket_timeout": params["connect_timeout"],
        "socket_connect_timeout": params["connect_timeout"],
        "decode_responses": False,
    }
    if params["login_unix_socket"]:
        kwargs["unix_socket_path"] = params["login_unix_socket"]
    else:
        kwargs.update(host=params["login_host"], port=params["login_port"])
    if params["tls"]:
        kwargs.update(
            ssl=True,
            ssl_cert_reqs="required" if params["validate_certs"] else "none",
            ssl_check_hostname=params["validate_certs"],
            ssl_ca_certs=params["ca_certs"],
            ssl_certfile=params["client_cert_file"],
            ssl_keyfile=params["client_key_file"],
        )
    if Retry is not None:
        # redis-py retries a refused connection for seconds by default; fail at once and say why.
        kwargs["retry"] = Retry(NoBackoff(), 0)
    return kwargs


def connect(params):
    """A client that answered PING. Raises RedisError."""
    try:
        client = redis.Redis(**client_kwargs(params))
        client.ping()
    except redis.RedisError as exc:
        raise failure(exc, params) from None
    return client


def failure(exc, params, **result):
    """A RedisError with a clear message for a redis-py exception (never the password)."""
    where = describe_server(params)
    detail = str(exc).rstrip(".")
    if isinstance(exc, redis.AuthenticationError) or "WRONGPASS" in str(exc) or "NOAUTH" in str(exc):
        return RedisError("Redis at %s refused the credentials: %s; check login_user and login_password" % (where, detail), **result)
    if isinstance(exc, redis.ConnectionError):
        hint = "check login_host/login_port or login_unix_socket, and that Redis is running"
        if params["tls"]:
            hint += " (tls=true: the server must listen with TLS on that port; check ca_certs/validate_certs)"
        return RedisError("cannot connect to Redis at %s: %s; %s" % (where, detail, hint), **result)
    if isinstance(exc, redis.TimeoutError):
        return RedisError("Redis at %s did not answer within %s s: %s" % (where, params["connect_timeout"], exc), **result)
    return RedisError("Redis at %s: %s" % (where, exc), **result)
