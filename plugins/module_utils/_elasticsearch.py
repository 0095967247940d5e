# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE module_utils of lifeboat.backup: not a public API, may change without notice.
"""Elasticsearch and OpenSearch over HTTP, for the elasticsearch_* modules.

One ``Client`` per module run: the connection options of the ``_elasticsearch`` doc
fragment, failover across ``hosts``, retries with back-off on 429/502/503/504 and on
connection errors, and error messages that say what to fix without ever carrying a
credential. The engine and version come from ``GET /`` (or ``GET /_nodes/_local`` where
the root endpoint is not served, as in the Elasticsearch 8 integ-test distribution), and
the few places where the engines' APIs differ ask the client (``ServerInfo``).

The rest are the snapshot helpers shared by several modules: repository lookups and the
``path.repo`` check, snapshot summaries, date-math names, the retention plan and the
poller that waits for snapshots and recoveries.
"""

from __future__ import annotations

import base64
import calendar
import copy
import datetime
import json
import os
import posixpath
import re
import time
import traceback
from urllib.parse import quote, urlsplit

from ansible_collections.lifeboat.backup.plugins.module_utils import _retention
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import LifeboatError
from ansible_collections.lifeboat.backup.plugins.module_utils._version import COLLECTION, COLLECTION_VERSION

REQUESTS_IMPORT_ERROR = None
try:
    import requests

    HAS_REQUESTS = True
except ImportError:
    requests = None
    HAS_REQUESTS = False
    REQUESTS_IMPORT_ERROR = traceback.format_exc()

JMESPATH_IMPORT_ERROR = None
try:
    import jmespath

    HAS_JMESPATH = True
except ImportError:
    jmespath = None
    HAS_JMESPATH = False
    JMESPATH_IMPORT_ERROR = traceback.format_exc()

# Snapshot metadata key that marks the snapshots this collection made (retention touches only those).
OWNER_KEY = "lifeboat"
RETRY_STATUS = (429, 502, 503, 504)
MAX_RETRY_DELAY = 30.0
DEFAULT_HOSTS = ["http://localhost:9200"]
FINISHED_STATES = ("SUCCESS", "PARTIAL", "FAILED", "INCOMPATIBLE")
# A URL request line stays far below the servers' 4 KiB limit with this many index names.
NAMES_PER_REQUEST = 40


# Options of the ``lifeboat.backup._elasticsearch`` doc fragment, defined once; modules pass
# it in LifeboatModule(specs=[...]) with CONNECTION_CHECKS.
CONNECTION_SPEC = dict(
    hosts=dict(type="list", elements="str", default=list(DEFAULT_HOSTS)),
    username=dict(type="str"),
    password=dict(type="str", no_log=True),
    api_key=dict(type="str", no_log=True),
    bearer_token=dict(type="str", no_log=True),
    ca_path=dict(type="path"),
    client_cert=dict(type="path"),
    client_key=dict(type="path", no_log=False),
    validate_certs=dict(type="bool", default=True),
    connect_timeout=dict(type="float", default=10.0),
    request_timeout=dict(type="float", default=60.0),
    retries=dict(type="int", default=3),
    retry_delay=dict(type="float", default=1.0),
)


def connection_argument_spec():
    """A copy of CONNECTION_SPEC, for an argument spec built by hand."""
    return copy.deepcopy(CONNECTION_SPEC)


CONNECTION_MUTUALLY_EXCLUSIVE = [["username", "api_key", "bearer_token"], ["password", "api_key", "bearer_token"]]
CONNECTION_REQUIRED_TOGETHER = [["username", "password"]]
CONNECTION_REQUIRED_BY = {"client_key": "client_cert"}


def module_kwargs(argument_spec, **extra):
    """AnsibleModule keyword arguments with the connection options merged in."""
    spec = connection_argument_spec()
    spec.update(argument_spec)
    kwargs = dict(
        argument_spec=spec,
        supports_check_mode=True,
        mutually_exclusive=list(CONNECTION_MUTUALLY_EXCLUSIVE),
        required_together=list(CONNECTION_REQUIRED_TOGETHER),
        required_by=dict(CONNECTION_REQUIRED_BY),
    )
    for key, value in extra.items():
        if key in ("mutually_exclusive", "required_together"):
            kwargs[key] = kwargs[key] + list(value)
        elif key == "required_by":
            kwargs[key].update(value)
        else:
            kwargs[key] = value
    return kwargs


class SearchError(LifeboatError):
    """A failed request or an unusable answer; the message says what to do and holds no secret."""

    def __init__(self, message, status=None, error_type=None, reason=None, body=None):
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.reason = reason
        self.body = body


class Reply:
    __slots__ = ("status", "data", "headers")

    def __init__(self, status, data, headers):
        self.status = status
        self.data = data
        self.headers = headers


class ServerInfo:
    """Engine and version of the cluster, and what that means for the API."""

    def __init__(self, engine, version, cluster_name=None, node=None):
        self.engine = engine
        self.version = version
        match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", version or "")
        self.version_tuple = tuple(int(x or 0) for x in match.groups()) if match else (0, 0, 0)
        self.cluster_name = cluster_name
        self.node = node

    @property
    def label(self):
        return "OpenSearch" if self.engine == "opensearch" else "Elasticsearch"

    @property
    def config_file(self):
        return "/etc/opensearch/opensearch.yml" if self.engine == "opensearch" else "/etc/elasticsearch/elasticsearch.yml"

    @property
    def service_user(self):
        return "opensearch" if self.engine == "opensearch" else "elasticsearch"

    def at_least(self, major, minor=0):
        return self.version_tuple[:2] >= (major, minor)

    def master_timeout(self, seconds):
        """The master-node timeout parameter: OpenSearch 2 renamed it (the old name is deprecated)."""
        value = "%ds" % max(1, int(seconds))
        if self.engine == "opensearch" and self.version_tuple[0] >= 2:
            return {"cluster_manager_timeout": value}
        return {"master_timeout": value}

    @property
    def multi_delete(self):
        """Several snapshots in one DELETE: Elasticsearch 7.8 and later, and OpenSearch."""
        return self.engine == "opensearch" or self.at_least(7, 8)

    @property
    def feature_states(self):
        """Snapshot feature states exist in Elasticsearch 7.12 and later only."""
        return self.engine == "elasticsearch" and self.at_least(7, 12)

    def as_dict(self):
        return {"engine": self.engine, "version": self.version, "cluster_name": self.cluster_name}


def normalize_host(host, position):
    """``host[:port]`` or a URL, without credentials or trailing slash."""
    text = host.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise SearchError("hosts[%d]: scheme %r is not supported; use http:// or https://" % (position, parts.scheme))
    if parts.username is not None or parts.password is not None:
        # Do not echo the value: it holds a password.
        raise SearchError("hosts[%d] contains credentials (user:password@); give them in username and password (or api_key / bearer_token) instead" % position)
    if not parts.hostname:
        raise SearchError("hosts[%d]: no host name in %r" % (position, host))
    return "%s://%s%s" % (parts.scheme, parts.netloc, parts.path.rstrip("/"))


def _api_key_header(api_key):
    # Elasticsearch wants base64("id:key"); accept that encoded form or the raw "id:key".
    if ":" in api_key:
        api_key = base64.b64encode(api_key.encode("utf-8")).decode("ascii")
    return "ApiKey " + api_key


def _error_fields(data, text):
    """(type, reason) from an Elasticsearch/OpenSearch error body."""
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            root = (error.get("root_cause") or [{}])[0] if isinstance(error.get("root_cause"), list) else {}
            caused = error.get("caused_by") or {}
            reason = error.get("reason") or root.get("reason")
            # "failed to create repository" hides the useful part in caused_by.
            if caused.get("reason") and reason and caused.get("reason") not in reason:
                reason = "%s: %s" % (reason, caused["reason"])
            return error.get("type") or root.get("type"), reason
        if isinstance(error, str):
            return None, error
    return None, (text or "").strip()[:500] or None


def _never_sent(exc):
    """True when the request cannot have reached the server (connect failed), so retrying is safe."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return type(reason).__name__ in ("NewConnectionError", "NameResolutionError")


def _connection_reason(exc):
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connection timed out (connect_timeout)"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return "no answer within request_timeout"
    text = str(exc)
    for needle, reason in (
        ("Connection refused", "connection refused"),
        ("Name or service not known", "host name not found"),
        ("NameResolutionError", "host name not found"),
        ("No route to host", "no route to host"),
        ("Connection reset", "connection reset by the server"),
        ("RemoteDisconnected", "the server closed the connection without answering"),
        ("Connection aborted", "the connection was aborted"),
    ):
        if needle in text:
            return reason
    return type(exc).__name__


def _http_session(username, password, api_key, bearer_token, ca_path, client_cert, client_key, validate_certs):
    """A requests session carrying the credentials and the TLS settings."""
    session = requests.Session()
    session.headers.update({"Accept": "application/json", "Content-Type": "application/json"})
    if username:
        session.auth = (username, password or "")
    elif api_key:
        session.headers["Authorization"] = _api_key_header(api_key)
    elif bearer_token:
        session.headers["Authorization"] = "Bearer " + bearer_token
    if ca_path:
        session.verify = ca_path if validate_certs else False
    else:
        session.verify = bool(validate_certs)
    if not validate_certs:
        try:
            requests.packages.urllib3.disable_warnings()
        except AttributeError:
            pass
    if client_cert:
        session.cert = (client_cert, client_key) if client_key else client_cert
    return session


class Client:
    """HTTP client for one cluster. ``request`` raises SearchError; nothing it raises or
    returns contains a credential."""

    def __init__(
        self,
        hosts,
        username=None,
        password=None,
        api_key=None,
        bearer_token=None,
        ca_path=None,
        client_cert=None,
        client_key=None,
        validate_certs=True,
        connect_timeout=10.0,
        request_timeout=60.0,
        retries=3,
        retry_delay=1.0,
        sleep=time.sleep,
    ):
        if not hosts:
            raise SearchError("hosts is empty: give at least one URL such as http://localhost:9200")
        self.hosts = [normalize_host(h, i) for i, h in enumerate(hosts)]
        if retries < 0:
            raise SearchError("retries must be 0 or more")
        self.retries = retries
        self.retry_delay = max(0.0, retry_delay)
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.has_credentials = bool(username or api_key or bearer_token)
        self._sleep = sleep
        self._current = 0
        self._server = None
        self.session = _http_session(username, password, api_key, bearer_token, ca_path, client_cert, client_key, validate_certs)

    @classmethod
    def from_params(cls, params):
        return cls(**{k: params.get(k) for k in CONNECTION_SPEC})

    @property
    def label(self):
        return self._server.label if self._server else "the search server"

    def _backoff(self, attempt, reply=None):
        if reply is not None:
            after = reply.headers.get("Retry-After")
            if after and after.isdigit():
                return min(float(after), MAX_RETRY_DELAY)
        return min(self.retry_delay * (2**attempt), MAX_RETRY_DELAY)

    def request(self, method, path, params=None, body=None, ok=(), idempotent=None, timeout=None):
        """Send ``method path``; return a Reply. HTTP errors raise SearchError unless their
        status is listed in ``ok``. Connection errors move on to the next host; after a
        round over all hosts (or a 429/502/503/504), wait and try again, ``retries`` times.
        A request that may have reached the server is only repeated when ``idempotent``
        (default: GET and HEAD)."""
        if idempotent is None:
            idempotent = method in ("GET", "HEAD")
        data = json.dumps(body) if body is not None else None
        attempts = self.retries + 1
        last = None
        for attempt in range(attempts):
            busy = None
            for offset in range(len(self.hosts)):
                index = (self._current + offset) % len(self.hosts)
                host = self.hosts[index]
                response = self._send(method, host, path, params, data, timeout, idempotent)
                if isinstance(response, Exception):
                    last = (host, response)
                    continue
                self._current = index
                reply = self._reply(response)
                if reply.status in RETRY_STATUS and attempt < attempts - 1:
                    busy = reply
                    last = (host, reply)
                    break
                return self._check(method, path, host, reply, ok)
            if attempt < attempts - 1:
                self._sleep(self._backoff(attempt, busy))
        host, what = last
        if isinstance(what, Reply):
            return self._check(method, path, host, what, ok)
        raise self._unreachable(what, attempts)

    def _send(self, method, host, path, params, data, timeout, idempotent):
        """The response, or the connection error to try the next host with. Raises
        SearchError for a TLS failure, and for a connection error after a request that
        changes something may have reached the server."""
        try:
            # verify given per request: a session-level CA bundle loses to REQUESTS_CA_BUNDLE otherwise.
            return self.session.request(
                method,
                host + path,
                params=params,
                data=data,
                timeout=(self.connect_timeout, timeout or self.request_timeout),
                allow_redirects=False,
                verify=self.session.verify,
            )
        except requests.exceptions.SSLError as exc:
            raise SearchError(self._tls_message(host, exc)) from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            if not idempotent and not _never_sent(exc):
                raise SearchError(
                    "%s %s at %s: %s; the request may have reached the server, so it was not repeated: "
                    "check the server's state before running again" % (method, path, host, _connection_reason(exc))
                ) from None
            return exc

    def _unreachable(self, exc, attempts):
        hosts = len(self.hosts)
        return SearchError(
            "cannot reach %s at %s: %s (%d attempt%s over %d host%s); check hosts, that the server is running and "
            "listening there, and firewalls"
            % (self.label, ", ".join(self.hosts), _connection_reason(exc), attempts, "s" if attempts > 1 else "", hosts, "s" if hosts > 1 else "")
        )

    @staticmethod
    def _reply(response):
        data = None
        if response.content:
            try:
                data = response.json()
            except ValueError:
                data = {"_text": response.text[:2000]}
        return Reply(response.status_code, data, response.headers)

    def _check(self, method, path, host, reply, ok):
        if reply.status < 400 or reply.status in ok:
            return reply
        data = reply.data if isinstance(reply.data, dict) else {}
        error_type, reason = _error_fields(data, data.get("_text"))
        where = "%s %s at %s" % (method, path, host)
        if reply.status == 401:
            if self.has_credentials:
                message = (
                    "authentication failed at %s (HTTP 401): the server refused the credentials; check username and password (or api_key / bearer_token)" % host
                )
            else:
                message = "%s at %s requires authentication (HTTP 401): give username and password, api_key or bearer_token" % (self.label, host)
        elif reply.status == 403:
            message = (
                "permission denied (HTTP 403) for %s: %s; the user needs the cluster privilege to manage snapshots "
                "(Elasticsearch: manage or create_snapshot/monitor_snapshot; OpenSearch: the snapshot management permissions) and access to the indices"
                % (
                    where,
                    reason or "forbidden",
                )
            )
        elif reply.status in RETRY_STATUS:
            message = "%s: the server is busy or unavailable (HTTP %d%s) after %d attempts; try again later or raise retries" % (
                where,
                reply.status,
                ": %s" % reason if reason else "",
                self.retries + 1,
            )
        else:
            message = "%s failed: HTTP %d%s%s" % (where, reply.status, " %s" % error_type if error_type else "", ": %s" % reason if reason else "")
        raise SearchError(message, status=reply.status, error_type=error_type, reason=reason, body=data)

    def _tls_message(self, host, exc):
        text = str(exc)
        if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
            detail = re.search(r"certificate verify failed: ([^(\)\"']+)", text)
            return (
                "TLS certificate verification failed for %s%s; give the CA bundle that signed the server certificate in ca_path "
                "(validate_certs=false skips the check, for tests only)"
                % (
                    host,
                    " (%s)" % detail.group(1).strip() if detail else "",
                )
            )
        if "hostname" in text.lower() and "match" in text.lower():
            return "TLS: the certificate of %s is not valid for that host name; use the name the certificate was issued for in hosts" % host
        return "TLS handshake with %s failed: %s; check ca_path, client_cert and client_key" % (host, text[:300])

    # -- convenience ----------------------------------------------------------------

    def get(self, path, params=None, ok=()):
        return self.request("GET", path, params=params, ok=ok).data

    def server(self):
        """Engine and version, from ``GET /`` or, where that is not served, ``GET /_nodes/_local``."""
        if self._server is None:
            reply = self.request("GET", "/", ok=(400, 404, 405))
            product = reply.headers.get("X-elastic-product")
            data = reply.data if isinstance(reply.data, dict) else {}
            version = data.get("version") if reply.status == 200 else None
            if isinstance(version, dict) and version.get("number"):
                engine = "opensearch" if version.get("distribution") == "opensearch" else "elasticsearch"
                self._server = ServerInfo(engine, version["number"], data.get("cluster_name"), data.get("name"))
            else:
                nodes_reply = self.request("GET", "/_nodes/_local", params={"filter_path": "cluster_name,nodes.*.version,nodes.*.name,nodes.*.roles"})
                nodes = (nodes_reply.data or {}).get("nodes") or {}
                if not nodes:
                    raise SearchError("%s did not say which engine and version it runs (GET / and GET /_nodes/_local)" % self.hosts[self._current])
                node = next(iter(nodes.values()))
                product = product or nodes_reply.headers.get("X-elastic-product")
                opensearch = not product and "cluster_manager" in (node.get("roles") or [])
                self._server = ServerInfo(
                    "opensearch" if opensearch else "elasticsearch", node.get("version"), nodes_reply.data.get("cluster_name"), node.get("name")
                )
        return self._server


def check_libraries(jmespath_needed=False):
    """Raise MissingLibraryError before anything touches requests (or jmespath)."""
    from ansible_collections.lifeboat.backup.plugins.module_utils._module import missing_library

    if not HAS_REQUESTS:
        raise missing_library("requests", REQUESTS_IMPORT_ERROR)
    if jmespath_needed and not HAS_JMESPATH:
        raise missing_library("jmespath", JMESPATH_IMPORT_ERROR)


def path_segment(name):
    """A name as one URL path segment (date math and odd characters encoded)."""
    return quote(name, safe="")


def path_list(names):
    return ",".join(path_segment(n) for n in names)


def chunks(items, size=NAMES_PER_REQUEST):
    items = list(items)
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ---- repositories ----------------------------------------------------------------------


def get_repository(client, name):
    """``{"type": ..., "settings": {...}}`` or None when not registered."""
    reply = client.request("GET", "/_snapshot/%s" % path_segment(name), ok=(404,))
    if reply.status == 404:
        return None
    return (reply.data or {}).get(name)


def list_repositories(client, names=None):
    path = "/_snapshot" if not names else "/_snapshot/%s" % path_list(names)
    reply = client.request("GET", path, ok=(404,))
    if reply.status == 404:
        return {}
    return {k: v for k, v in (reply.data or {}).items() if isinstance(v, dict)}


def node_repo_paths(client):
    """Each node's name, roles and ``path.repo`` list (empty when unset)."""
    data = client.get("/_nodes/settings", params={"filter_path": "nodes.*.name,nodes.*.roles,nodes.*.settings.path.repo"})
    nodes = []
    for node_id, node in sorted(((data or {}).get("nodes") or {}).items()):
        repo = ((node.get("settings") or {}).get("path") or {}).get("repo") or []
        if isinstance(repo, str):
            repo = [p for p in re.split(r"[,\s]+", repo.strip("[]")) if p]
        nodes.append({"id": node_id, "name": node.get("name", node_id), "roles": node.get("roles") or [], "path_repo": [posixpath.normpath(p) for p in repo]})
    return nodes


def is_under(path, roots):
    path = posixpath.normpath(path)
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def resolve_location(location, nodes):
    """An absolute location; a relative one is resolved against the first path.repo entry
    (as the servers do). None when relative and no node has path.repo."""
    if posixpath.isabs(location):
        return posixpath.normpath(location)
    for node in nodes:
        if node["path_repo"]:
            return posixpath.normpath(posixpath.join(node["path_repo"][0], location))
    return None


def path_repo_message(location, missing, server):
    """The message for a repository location outside path.repo: what to add where."""
    which = "; ".join("%s: path.repo %s" % (n["name"], json.dumps(n["path_repo"]) if n["path_repo"] else "is not set") for n in missing)
    return (
        "repository location {loc} is not under path.repo on {count} node(s) ({which}). "
        "On every node of the cluster: add the directory to path.repo in {conf} "
        '(path.repo: ["{loc}"], or append it to the existing list), create it and give it to the account '
        "the server runs as (mkdir -p {loc} && chown {user}:{user} {loc}), then restart the node; "
        "on a cluster of several nodes the location must be a shared filesystem mounted at the same path on each. "
        "Then run this task again."
    ).format(loc=location, count=len(missing), which=which, conf=server.config_file, user=server.service_user)


def check_location(client, server, location):
    """(absolute location, error message or None) for an fs repository location."""
    nodes = node_repo_paths(client)
    absolute = resolve_location(location, nodes)
    if absolute is None:
        return location, path_repo_message(location, nodes, server)
    missing = [n for n in nodes if not is_under(absolute, n["path_repo"])]
    return absolute, (path_repo_message(absolute, missing, server) if missing else None)


def repository_location(client, name, repository=None):
    """Absolute filesystem location of a registered fs repository (None for other types)."""
    repository = repository or get_repository(client, name)
    if not repository or repository.get("type") != "fs":
        return None
    location = (repository.get("settings") or {}).get("location")
    if not location:
        return None
    return resolve_location(location, node_repo_paths(client))


def root_index(location, names=None):
    """(generation, data) of an fs repository's root ``index-N`` (plain JSON in every engine
    version): the highest N among ``names`` (default: the directory's files). (None, None)
    when there is none."""
    names = os.listdir(location) if names is None else names
    generations = [int(n[len("index-") :]) for n in names if n.startswith("index-") and n[len("index-") :].isdigit()]
    if not generations:
        return None, None
    generation = max(generations)
    with open(os.path.join(location, "index-%d" % generation), "rb") as handle:
        return generation, json.loads(handle.read().decode("utf-8"))


def repository_holds(location, uuid):
    """Whether the fs repository at ``location`` lists snapshot ``uuid``."""
    try:
        _generation, data = root_index(location)
    except (OSError, ValueError):
        return False
    return uuid in [s.get("uuid") for s in (data or {}).get("snapshots") or []]


# ---- snapshots ---------------------------------------------------------------------------


def is_own(raw):
    metadata = raw.get("metadata") or {}
    marker = metadata.get(OWNER_KEY)
    return isinstance(marker, dict) and marker.get("created_by") == COLLECTION


def owner_metadata(extra=None):
    marker = {"created_by": COLLECTION, "version": COLLECTION_VERSION}
    marker.update(extra or {})
    return marker


def summary(raw, repository):
    """The fields of a snapshot that modules return and the manifest records."""
    return {
        "name": raw.get("snapshot"),
        "uuid": raw.get("uuid"),
        "repository": raw.get("repository") or repository,
        "state": raw.get("state"),
        "indices": sorted(raw.get("indices") or []),
        "data_streams": sorted(raw.get("data_streams") or []),
        "include_global_state": raw.get("include_global_state"),
        "start_time": raw.get("start_time"),
        "end_time": raw.get("end_time"),
        "start_time_in_millis": raw.get("start_time_in_millis"),
        "end_time_in_millis": raw.get("end_time_in_millis"),
        "duration_in_millis": raw.get("duration_in_millis"),
        "shards": raw.get("shards") or {},
        "failures": [
            {k: f.get(k) for k in ("index", "shard_id", "node_id", "reason", "status") if f.get(k) is not None}
            for f in raw.get("failures") or []
            if isinstance(f, dict)
        ],
        "metadata": raw.get("metadata") or {},
        "version": raw.get("version"),
        "created_by_collection": is_own(raw),
    }


def get_snapshots(client, repository, names=("_all",), verbose=True):
    """Raw snapshot records of ``repository`` matching ``names``; [] when none match.
    Raises SearchError when the repository does not exist."""
    params = {"ignore_unavailable": "true"}
    if not verbose:
        params["verbose"] = "false"
    reply = client.request("GET", "/_snapshot/%s/%s" % (path_segment(repository), path_list(names)), params=params, ok=(404,))
    data = reply.data or {}
    failures = data.get("failures") or {}
    if reply.status == 404 or failures:
        # Elasticsearch 7.x answers 200 with per-repository failures.
        error_type, reason = _error_fields(data, None)
        if failures:
            first = next(iter(failures.values()))
            error_type, reason = first.get("type"), first.get("reason")
        if error_type == "repository_missing_exception":
            raise SearchError(
                "repository %s is not registered; register it with lifeboat.backup.elasticsearch_repository" % repository, status=404, error_type=error_type
            )
        if reply.status == 404:
            return []
        raise SearchError("listing snapshots of %s failed: %s" % (repository, reason), error_type=error_type)
    if "snapshots" in data:
        return data["snapshots"]
    # Elasticsearch 6.x shape: {"responses": [{"repository": ..., "snapshots": [...]}]}
    return [s for r in data.get("responses") or [] for s in r.get("snapshots") or []]


def get_snapshot(client, repository, name):
    found = get_snapshots(client, repository, [name])
    return found[0] if found else None


def snapshot_status(client, repository, name):
    """``_status`` of one snapshot (progress while it runs, sizes once done), or None."""
    reply = client.request("GET", "/_snapshot/%s/%s/_status" % (path_segment(repository), path_segment(name)), ok=(404,))
    if reply.status == 404:
        return None
    snapshots = (reply.data or {}).get("snapshots") or []
    return snapshots[0] if snapshots else None


def _size(stats, kind):
    """Bytes from a stats block; the field moved in Elasticsearch 7.8 (total_size_in_bytes)."""
    block = stats.get(kind)
    if isinstance(block, dict) and "size_in_bytes" in block:
        return block["size_in_bytes"], block.get("file_count")
    legacy = {"total": ("total_size_in_bytes", "number_of_files"), "incremental": ("size_in_bytes", "number_of_files")}
    size_key, count_key = legacy.get(kind, (None, None))
    if kind == "incremental" and "incremental" not in stats and "total" not in stats:
        return stats.get("size_in_bytes"), stats.get("number_of_files")
    return stats.get(size_key), stats.get(count_key)


def sizes(status):
    """Total and incremental bytes and file counts, per snapshot and per index."""
    if not status:
        return {}
    stats = status.get("stats") or {}
    total, total_files = _size(stats, "total")
    incremental, incremental_files = _size(stats, "incremental")
    per_index = {}
    for index, info in sorted((status.get("indices") or {}).items()):
        index_total, _files = _size(info.get("stats") or {}, "total")
        per_index[index] = index_total
    return {
        "total_bytes": total,
        "total_files": total_files,
        "incremental_bytes": incremental,
        "incremental_files": incremental_files,
        "index_bytes": per_index,
    }


def progress(status, elapsed):
    """One progress sample from a ``_status`` answer."""
    shards = (status or {}).get("shards_stats") or {}
    stats = (status or {}).get("stats") or {}
    processed = stats.get("processed") if isinstance(stats.get("processed"), dict) else {}
    total, _files = _size(stats, "total")
    return {
        "elapsed": round(elapsed, 1),
        "state": (status or {}).get("state"),
        "shards_done": shards.get("done"),
        "shards_failed": shards.get("failed"),
        "shards_total": shards.get("total"),
        "bytes_done": processed.get("size_in_bytes"),
        "bytes_total": total,
    }


def keep_samples(samples, limit=60):
    """Progress history bounded in size: the first, the last and evenly spread ones in between."""
    if len(samples) <= limit:
        return samples
    step = (len(samples) - 1) / float(limit - 1)
    return [samples[int(round(i * step))] for i in range(limit)]


def shard_failure_text(failures, limit=5):
    parts = ["%s[%s]: %s" % (f.get("index"), f.get("shard_id"), f.get("reason")) for f in failures[:limit]]
    if len(failures) > limit:
        parts.append("and %d more" % (len(failures) - limit))
    return "; ".join(parts)


_INVALID_NAME = re.compile(r'[\\/*?"<>|,# ]')


def validate_snapshot_name(name):
    """None when ``name`` is a valid (already resolved) snapshot name, else the reason."""
    if not name:
        return "is empty"
    if name != name.lower():
        return "must be lower case"
    if name.startswith("_"):
        return "must not start with _"
    bad = _INVALID_NAME.search(name)
    if bad:
        return "must not contain %r" % bad.group(0)
    return None


def generated_name(backup_id=None, now=None):
    """``lifeboat-<backup id>`` within a session, else ``lifeboat-<utc time>``."""
    base = backup_id or time.strftime("%Y%m%dt%H%M%Sz", time.gmtime(now if now is not None else time.time()))
    return "lifeboat-" + re.sub(r"[^a-z0-9._-]+", "-", base.lower()).strip("-")


# ---- date math names ---------------------------------------------------------------------

_MATH = re.compile(r"([+-])(\d+)([yMwdhHms])")
_JAVA_FORMAT = [
    ("uuuu", "%Y"),
    ("yyyy", "%Y"),
    ("uu", "%y"),
    ("yy", "%y"),
    ("MM", "%m"),
    ("dd", "%d"),
    ("HH", "%H"),
    ("mm", "%M"),
    ("ss", "%S"),
]


def _add(moment, amount, unit):
    if unit == "y":
        return moment.replace(year=moment.year + amount)
    if unit == "M":
        month = moment.month - 1 + amount
        return moment.replace(year=moment.year + month // 12, month=month % 12 + 1)
    seconds = {"w": 604800, "d": 86400, "h": 3600, "H": 3600, "m": 60, "s": 1}[unit]
    return moment + datetime.timedelta(seconds=amount * seconds)


def _round_down(moment, unit):
    if unit == "y":
        return moment.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
    if unit == "M":
        return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if unit == "w":
        start = moment - datetime.timedelta(days=moment.weekday())
        return start.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "d":
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit in ("h", "H"):
        return moment.replace(minute=0, second=0, microsecond=0)
    if unit == "m":
        return moment.replace(second=0, microsecond=0)
    return moment.replace(microsecond=0)


def _java_format(moment, pattern):
    out = []
    i = 0
    while i < len(pattern):
        for token, code in _JAVA_FORMAT:
            if pattern.startswith(token, i):
                out.append(moment.strftime(code))
                i += len(token)
                break
        else:
            char = pattern[i]
            if char.isalpha():
                raise ValueError("date format letter %r is not supported (use uuuu/yyyy, MM, dd, HH, mm, ss)" % char)
            out.append(char)
            i += 1
    return "".join(out)


def _timezone(text):
    if text in ("UTC", "Z", "+00:00"):
        return datetime.timezone.utc
    match = re.match(r"^([+-])(\d{2}):?(\d{2})$", text)
    if not match:
        raise ValueError("time zone %r is not supported (use UTC or an offset like +01:00)" % text)
    offset = datetime.timedelta(hours=int(match.group(2)), minutes=int(match.group(3)))
    return datetime.timezone(offset if match.group(1) == "+" else -offset)


def _expression(expr, now):
    fmt = "uuuu.MM.dd"
    zone = datetime.timezone.utc
    if "{" in expr:
        if not expr.endswith("}"):
            raise ValueError("unbalanced braces in {%s}" % expr)
        expr, _brace, spec = expr[:-1].partition("{")
        fmt, _bar, tz = spec.partition("|")
        fmt = fmt or "uuuu.MM.dd"
        if tz:
            zone = _timezone(tz)
    if not expr.startswith("now"):
        raise ValueError("date math must start with now, not %r" % expr)
    rest = expr[3:]
    moment = datetime.datetime.fromtimestamp(now, zone)
    while rest:
        match = _MATH.match(rest)
        if match:
            amount = int(match.group(2)) * (1 if match.group(1) == "+" else -1)
            moment = _add(moment, amount, match.group(3))
            rest = rest[match.end() :]
            continue
        if rest[0] == "/" and len(rest) >= 2 and rest[1] in "yMwdhHms":
            moment = _round_down(moment, rest[1])
            rest = rest[2:]
            continue
        raise ValueError("cannot read %r in date math %r" % (rest, expr))
    return _java_format(moment, fmt)


def resolve_date_math(name, now=None):
    """Resolve an Elasticsearch date-math name such as ``<nightly-{now/d}>`` the way the server
    would (UTC unless a zone is given), so the module knows the name before the snapshot
    exists. Plain names come back unchanged. Raises ValueError for what is not supported."""
    if not (name.startswith("<") and name.endswith(">")):
        return name
    now = time.time() if now is None else now
    body = name[1:-1]
    out = []
    i = 0
    while i < len(body):
        char = body[i]
        if char == "\\" and i + 1 < len(body):
            out.append(body[i + 1])
            i += 2
        elif char == "{":
            depth = 1
            j = i + 1
            while j < len(body) and depth:
                depth += {"{": 1, "}": -1}.get(body[j], 0)
                j += 1
            if depth:
                raise ValueError("unbalanced braces in %r" % name)
            out.append(_expression(body[i + 1 : j - 1], now))
            i = j
        elif char == "}":
            raise ValueError("unbalanced braces in %r" % name)
        else:
            out.append(char)
            i += 1
    return "".join(out)


# ---- retention ---------------------------------------------------------------------------


def _start_millis(raw):
    millis = raw.get("start_time_in_millis")
    if millis is not None:
        return millis
    text = raw.get("start_time")
    if text:
        try:
            return calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")) * 1000
        except ValueError:
            pass
    return 0


# A snapshot's state as a retention verdict (module_utils/_retention.py); a snapshot still
# running gets its own state, which retention never judges.
_VERDICTS = {"SUCCESS": "success", "PARTIAL": "partial", "FAILED": "failed", "INCOMPATIBLE": "failed"}


def plan_retention(snapshots, now, policy, only_own=True):
    """Decide which snapshots to delete with the collection's retention policy
    (``_retention.Policy`` or the option's dict). Returns (delete, keep), each a list of
    ``(raw snapshot, reason)`` newest first. Only snapshots made by this collection are
    considered unless ``only_own`` is false; the others are not returned at all."""
    items = [
        {
            "name": raw.get("snapshot"),
            "time": _start_millis(raw) / 1000.0,
            "verdict": _VERDICTS.get(raw.get("state"), str(raw.get("state")).lower()),
            "raw": raw,
        }
        for raw in snapshots
        if not only_own or is_own(raw)
    ]
    decisions = _retention.plan(items, policy, now)
    delete = [(d.item["raw"], d.rule) for d in decisions if d.action == "remove"]
    keep = [(d.item["raw"], d.rule) for d in decisions if d.action == "keep"]
    return delete, keep


def delete_snapshots(client, server, repository, names, timeout):
    """Delete ``names`` (one request where the server allows several). Returns the names deleted."""
    deleted = []
    groups = list(chunks(names)) if server.multi_delete else [[n] for n in names]
    for group in groups:
        client.request(
            "DELETE",
            "/_snapshot/%s/%s" % (path_segment(repository), path_list(group)),
            params=server.master_timeout(timeout),
            idempotent=True,
            timeout=max(timeout, client.request_timeout),
        )
        deleted.extend(group)
    return deleted


# ---- waiting -----------------------------------------------------------------------------


class Poller:
    """Paces status checks while waiting for a snapshot or a recovery: the pause is 1 % of the
    time waited so far, between ``minimum`` and ``maximum`` seconds. A short operation is
    seen done soon, a long one is overshot by 1 % at most, and the cluster is not kept busy
    answering (five questions a second at the most)."""

    def __init__(self, timeout, minimum=0.2, maximum=5.0, clock=time.monotonic, sleep=time.sleep):
        self.timeout = timeout
        self.minimum = minimum
        self.maximum = maximum
        self._clock = clock
        self._sleep = sleep
        self.started = clock()

    @property
    def elapsed(self):
        return self._clock() - self.started

    @property
    def expired(self):
        return self.timeout is not None and self.elapsed >= self.timeout

    def pause(self):
        delay = min(self.maximum, max(self.minimum, self.elapsed * 0.01))
        if self.timeout is not None:
            delay = max(0.0, min(delay, self.timeout - self.elapsed))
        self._sleep(delay)


def jmespath_search(query, data):
    """Apply a JMESPath ``query``; ValueError with the parser's message on a bad query."""
    try:
        return jmespath.search(query, data)
    except jmespath.exceptions.JMESPathError as exc:
        raise ValueError("query %r is not valid JMESPath: %s" % (query, exc)) from None
