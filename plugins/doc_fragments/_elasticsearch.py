# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE doc fragment of lifeboat.backup.

from __future__ import annotations


class ModuleDocFragment:
    # Connection options of the elasticsearch_* modules (module_utils/_elasticsearch.py).
    DOCUMENTATION = r"""
options:
  hosts:
    description:
      - URLs of the cluster's HTTP endpoints (C(http://host:9200), C(https://host:9200) or C(host:port),
        which means C(http://)). When a host cannot be reached the next one is tried.
      - Never put credentials in a URL; use O(username)/O(password), O(api_key) or O(bearer_token).
    type: list
    elements: str
    default: ["http://localhost:9200"]
    version_added: 0.1.0
  username:
    description:
      - User for HTTP basic authentication. Requires O(password).
    type: str
    version_added: 0.1.0
  password:
    description:
      - Password for O(username). Never logged, never returned.
    type: str
    version_added: 0.1.0
  api_key:
    description:
      - Elasticsearch API key, either as C(id:api_key) or already base64-encoded (the C(encoded)
        value the create API key API returns). Sent in the C(Authorization) header as C(ApiKey ...).
      - Never logged, never returned. Mutually exclusive with O(username) and O(bearer_token).
    type: str
    version_added: 0.1.0
  bearer_token:
    description:
      - Token sent in the C(Authorization) header as C(Bearer ...) (Elasticsearch service or OAuth
        tokens, a reverse proxy's tokens). Never logged, never returned.
    type: str
    version_added: 0.1.0
  ca_path:
    description:
      - PEM file (on the managed node) with the CA certificate(s) that signed the server's
        certificate, for C(https://) hosts.
    type: path
    version_added: 0.1.0
  client_cert:
    description:
      - PEM client certificate for TLS client authentication (may also hold the key).
    type: path
    version_added: 0.1.0
  client_key:
    description:
      - PEM private key of O(client_cert), when the certificate file does not include it.
    type: path
    version_added: 0.1.0
  validate_certs:
    description:
      - Verify the server's TLS certificate. Set to V(false) only for tests.
    type: bool
    default: true
    version_added: 0.1.0
  connect_timeout:
    description:
      - Seconds to wait for a TCP/TLS connection to a host.
    type: float
    default: 10
    version_added: 0.1.0
  request_timeout:
    description:
      - Seconds to wait for the answer to one request. Long operations (snapshots, restores)
        are not waited for in one request; they are polled, and have their own timeouts.
    type: float
    default: 60
    version_added: 0.1.0
  retries:
    description:
      - How many times a request is repeated after a connection error or an HTTP 429, 502, 503
        or 504 answer, waiting O(retry_delay) seconds and doubling the wait each time (at most
        30 s; a C(Retry-After) header is honoured).
      - A request that changes something (create a snapshot, start a restore) is repeated only
        when it certainly did not reach the server.
    type: int
    default: 3
    version_added: 0.1.0
  retry_delay:
    description:
      - Seconds before the first retry.
    type: float
    default: 1
    version_added: 0.1.0
attributes:
  action_group:
    description: Use C(group/lifeboat.backup.elasticsearch) in C(module_defaults) to set the connection options once for every module of the family.
    support: full
    membership:
      - lifeboat.backup.elasticsearch
requirements:
  - requests (Python library, on the managed node).
notes:
  - Tested with OpenSearch 2.19 and Elasticsearch 7.17 and 8.19. The engine and its version
    are read from the cluster (C(GET /), or C(GET /_nodes/_local) where the root endpoint is
    not served) and the requests adapt where the APIs differ.
"""
