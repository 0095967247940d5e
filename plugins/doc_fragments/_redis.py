# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE doc fragment of lifeboat.backup.

from __future__ import annotations


class ModuleDocFragment:
    # Connection options of the modules that talk to Redis (module_utils._redis.CONNECTION_SPEC).
    # Names as in community.general's Redis fragment; the 0.1.0 names are deprecated aliases.
    DOCUMENTATION = r"""
options:
  login_host:
    description:
      - Redis server host name or address. Ignored with O(login_unix_socket).
      - Called C(host) before 0.2.0; that name is deprecated and will be removed in 0.3.0.
    type: str
    default: localhost
    aliases: [host]
    version_added: 0.1.0
  login_port:
    description:
      - Redis server TCP port.
      - Called C(port) before 0.2.0; that name is deprecated and will be removed in 0.3.0.
    type: int
    default: 6379
    aliases: [port]
    version_added: 0.1.0
  login_unix_socket:
    description:
      - Path of the Redis unix socket. Used instead of O(login_host) and O(login_port) when set.
      - Called C(unix_socket) before 0.2.0; that name is deprecated and will be removed in 0.3.0.
    type: path
    aliases: [unix_socket]
    version_added: 0.1.0
  db:
    description:
      - Redis database number. Celery uses the number at the end of its broker URL
        (C(redis://host:6379/0) is database 0).
    type: int
    default: 0
    version_added: 0.1.0
  login_user:
    description:
      - ACL user name (Redis 6 and later). Omit to authenticate with O(login_password) only
        (the C(default) user, or C(requirepass)).
      - Called C(username) before 0.2.0; that name is deprecated and will be removed in 0.3.0.
    type: str
    aliases: [username]
    version_added: 0.1.0
  login_password:
    description:
      - Password for C(AUTH). Never logged, never returned.
      - Called C(password) before 0.2.0; that name is deprecated and will be removed in 0.3.0.
    type: str
    aliases: [password]
    version_added: 0.1.0
  tls:
    description:
      - Connect with TLS (C(rediss://)).
    type: bool
    default: false
    version_added: 0.1.0
  validate_certs:
    description:
      - With O(tls), verify the server certificate and host name. Turn off only for a test
        server with a self-signed certificate you do not have the CA of.
    type: bool
    default: true
    version_added: 0.1.0
  ca_certs:
    description:
      - With O(tls), path of the CA bundle (PEM) the server certificate is checked against.
        Default is the system trust store.
    type: path
    version_added: 0.1.0
  client_cert_file:
    description:
      - With O(tls), path of a client certificate (PEM) for servers that require one.
      - Called C(client_cert) before 0.2.0; that name is deprecated and will be removed in 0.3.0.
    type: path
    aliases: [client_cert]
    version_added: 0.1.0
  client_key_file:
    description:
      - With O(tls), path of the private key of O(client_cert_file).
      - Called C(client_key) before 0.2.0; that name is deprecated and will be removed in 0.3.0.
    type: path
    aliases: [client_key]
    version_added: 0.1.0
  connect_timeout:
    description:
      - Seconds to wait for the connection and for each command.
    type: float
    default: 10
    version_added: 0.1.0
requirements:
  - redis (the redis-py Python library, on the managed node).
"""
