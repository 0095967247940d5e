#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: drill_sandbox
short_description: Start and remove the throw-away servers a restore drill restores into
version_added: 0.2.0
description:
  - A restore drill (C(playbooks/drill.yml), C(docs/drills.md)) restores an image into servers
    that touch nothing of production. This module makes them on the drill host, under one
    sandbox directory, and removes them afterwards.
  - With O(state=started) and O(kind=postgresql), initialises a new PostgreSQL cluster in
    C(<path>/<name>/data) with the host's own binaries (the major version the image was taken
    from, else the oldest newer one), and starts it listening only on a unix socket in
    C(<path>/<name>/run) (no TCP port is opened, so it cannot clash with or be mistaken for a
    production server). The superuser C(postgres) connects without a password over that
    socket, which only the server's account and root can reach; no password is created or
    stored. The server runs with C(fsync=off) - its data is thrown away.
  - With O(state=started) and O(kind=elasticsearch) or O(kind=opensearch), starts one node of
    that engine on 127.0.0.1 on a free port, every directory of it (configuration, data, logs,
    snapshot repository C(path.repo), temporary files) in C(<path>/<name>), security off,
    C(discovery.type=single-node). It runs from an installed distribution - O(home), else the one
    a running server of that engine on this host runs from (its C(path.home) on its command line),
    else C(/usr/share/<engine>) or C(/opt/<engine>) - of the version O(version) names, else the
    oldest newer one. Only the distribution's C(jvm.options) (its log and dump files pointed into
    the sandbox) and C(log4j2.properties) are copied; production's settings file and keystore are
    never read.
  - With O(state=present), only makes the sandbox directory (with its marker), for what is
    restored into plain directories.
  - With O(state=absent), stops every server started under O(path) (a search node's whole
    process group) and removes O(path). A
    non-empty directory this module did not make a sandbox (it has no C(.lifeboat-drill-sandbox)
    marker) is refused, so a mistyped path cannot remove anything else; an empty one is removed.
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
extends_documentation_fragment:
  - lifeboat.backup._attributes
attributes:
  check_mode:
    support: none
  diff_mode:
    support: none
options:
  path:
    description:
      - The sandbox directory. Created (mode 0711) with a marker file when absent.
    type: path
    required: true
  state:
    description:
      - C(started) makes and starts one server; C(present) makes the sandbox directory only;
        C(absent) stops every server and removes O(path).
    type: str
    choices: [started, present, absent]
    default: started
  name:
    description:
      - The server's name in the sandbox (the component's name); its directory is C(<path>/<name>).
      - Required with O(state=started).
    type: str
  kind:
    description:
      - The kind of server.
      - C(elasticsearch) and C(opensearch) were added in version 0.2.0 of the collection.
    type: str
    choices: [postgresql, elasticsearch, opensearch]
    default: postgresql
  version:
    description:
      - The PostgreSQL server version the image was taken from (C(server_version_num) such as
        C(150004), or text such as C(15.4)); binaries of the same major version are chosen, else
        the oldest newer ones.
      - With O(kind=elasticsearch) or O(kind=opensearch), the version the snapshot was taken
        with (C(2.19.6)); a distribution of that version is chosen, else the oldest newer one (a
        snapshot restores into the same version or a newer one).
      - Default is the newest installed.
    type: str
  bin_dir:
    description:
      - The directory holding C(initdb), C(pg_ctl) and C(postgres). Default is to look in the
        usual install directories and C(PATH).
    type: path
  account:
    description:
      - The account the server runs as when the module runs as root (the servers refuse to run
        as root). Ignored otherwise.
      - Default is C(postgres) for PostgreSQL; for a search node, the account of the running
        server whose distribution is used, else an account named after the engine.
    type: str
  home:
    description:
      - With O(kind=elasticsearch) or O(kind=opensearch), the distribution's directory (holding
        C(bin/<engine>) and C(lib/<engine>-X.Y.Z.jar)). Default is found as described above.
    type: path
    version_added: 0.2.0
  java_home:
    description:
      - The JDK a search node runs with. Default is the distribution's bundled C(jdk), else the
        running server's, else C(JAVA_HOME), else C(java) on C(PATH).
    type: path
    version_added: 0.2.0
  heap:
    description:
      - Heap size of a search node (C(-Xms)/C(-Xmx)); it overrides the distribution's.
    type: str
    default: 512m
    version_added: 0.2.0
  repository_paths:
    description:
      - Directories added to a search node's C(path.repo) besides its own C(<path>/<name>/repo),
        such as production's shared fs repository, to register read-only.
    type: list
    elements: path
    default: []
    version_added: 0.2.0
  start_timeout:
    description:
      - Seconds to wait for the server to accept connections.
    type: int
    default: 120
notes:
  - The server keeps running after the module returns; remove it with O(state=absent) (the drill
    role does, whatever happened, unless told to keep the sandbox).
requirements:
  - requests (Python library, on the node) with O(kind=elasticsearch) or O(kind=opensearch).
seealso:
  - module: lifeboat.backup.postgresql_restore
  - module: lifeboat.backup.postgresql_fingerprint
  - module: lifeboat.backup.elasticsearch_restore
  - module: lifeboat.backup.elasticsearch_fingerprint
"""

EXAMPLES = r"""
- name: A throw-away PostgreSQL of the image's major version
  lifeboat.backup.drill_sandbox:
    path: /var/tmp/lifeboat-drill-db1
    name: postgresql
    version: "150004"
  register: sandbox

- name: Restore into it
  lifeboat.backup.postgresql_restore:
    image: /var/backups/lifeboat/20261122T194512Z-db1.zip
    passphrase: "{{ vault_backup_passphrase }}"
    login_unix_socket: "{{ sandbox.host }}"
    port: "{{ sandbox.port }}"

- name: A throw-away OpenSearch node of the snapshot's version, from the distribution the node runs
  lifeboat.backup.drill_sandbox:
    path: /var/tmp/lifeboat-drill-db1
    name: search
    kind: opensearch
    version: 2.19.6
    heap: 512m
  register: search_sandbox

- name: Restore the image's snapshot into it
  lifeboat.backup.elasticsearch_restore:
    hosts: ["{{ search_sandbox.url }}"]
    image: /var/backups/lifeboat/20261122T194512Z-db1.zip
    passphrase: "{{ vault_backup_passphrase }}"
    component: search
    repository: drill
    repository_location: "{{ search_sandbox.repository_dir }}/drill"
    index_settings: {index.number_of_replicas: 0}

- name: Stop it and remove everything
  lifeboat.backup.drill_sandbox:
    path: /var/tmp/lifeboat-drill-db1
    state: absent
"""

RETURN = r"""
host:
  description: The directory of the server's unix socket (use it as C(login_unix_socket) or C(PGHOST)).
  returned: state=started, kind=postgresql
  type: str
  sample: /var/tmp/lifeboat-drill-db1/postgresql/run
port:
  description: The server's port (the number in its socket's name; no TCP port is open).
  returned: state=started, kind=postgresql
  type: int
  sample: 5432
user:
  description: The superuser to connect as.
  returned: state=started, kind=postgresql
  type: str
  sample: postgres
data_dir:
  description: The new cluster's data directory.
  returned: state=started
  type: str
  sample: /var/tmp/lifeboat-drill-db1/postgresql/data
server_version:
  description: The version of the binaries the server runs (C(postgres --version); for a search node, engine and version).
  returned: state=started
  type: str
  sample: postgres (PostgreSQL) 15.4
bin_dir:
  description: The directory of the binaries used.
  returned: state=started, kind=postgresql
  type: str
  sample: /usr/lib/postgresql/15/bin
url:
  description: The search node's URL (on 127.0.0.1, security off).
  returned: state=started, kind=elasticsearch or opensearch
  type: str
  sample: http://127.0.0.1:41235
  version_added: 0.2.0
repository_dir:
  description: The search node's own C(path.repo) directory (unpack a snapshot repository below it).
  returned: state=started, kind=elasticsearch or opensearch
  type: str
  sample: /var/tmp/lifeboat-drill-db1/search/repo
  version_added: 0.2.0
home:
  description: The distribution the search node runs from.
  returned: state=started, kind=elasticsearch or opensearch
  type: str
  sample: /usr/share/opensearch
  version_added: 0.2.0
seconds:
  description: Time taken to initialise and start the server.
  returned: state=started
  type: float
  sample: 2.4
path:
  description: The sandbox directory.
  returned: state=present
  type: str
  sample: /var/tmp/lifeboat-drill-db1
stopped:
  description: The servers stopped (their names).
  returned: state=absent
  type: list
  elements: str
  sample: [postgresql]
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

import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
import time

from ansible_collections.lifeboat.backup.plugins.module_utils import _postgresql as pg
from ansible_collections.lifeboat.backup.plugins.module_utils import _proc
from ansible_collections.lifeboat.backup.plugins.module_utils import _search_sandbox as search
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import LifeboatError, OptionError
from ansible_collections.lifeboat.backup.plugins.module_utils._module import LifeboatModule

MARKER = ".lifeboat-drill-sandbox"
RECORD = "sandbox.json"
TOOLS = ["initdb", "pg_ctl", "postgres"]


def account_ids(params):
    """(uid, gid) to run the server as, or None when not root."""
    if os.geteuid() != 0:
        return None
    account = params["account"] or "postgres"
    try:
        record = pwd.getpwnam(account)
    except KeyError:
        raise OptionError("account", "account: no such user %s on this host; PostgreSQL refuses to run as root" % account) from None
    return record.pw_uid, record.pw_gid


def check_reachable(path, ids, account):
    """Raise naming the first directory above ``path`` the server's account cannot enter."""
    current = os.path.dirname(os.path.abspath(path))
    while True:
        info = os.stat(current)
        bit = stat.S_IXUSR if info.st_uid == ids[0] else stat.S_IXGRP if info.st_gid == ids[1] else stat.S_IXOTH
        if not info.st_mode & bit:
            raise OptionError(
                "path",
                "path: the server's account %s cannot enter %s (mode %o), above the sandbox %s: make the sandbox under a directory "
                "every account can enter (such as /var/tmp; the drill role's drill_dir)" % (account, current, stat.S_IMODE(info.st_mode), path),
            )
        if current == os.path.dirname(current):
            return
        current = os.path.dirname(current)


def run_as(argv, ids, log, timeout):
    """Run argv (as ``ids`` when given) in the log's directory, its output appended to
    ``log``; raise naming it, with the last lines of its output."""
    kwargs = {"user": ids[0], "group": ids[1], "extra_groups": [], "cwd": os.path.dirname(log)} if ids else {}
    with open(log, "ab") as handle:
        try:
            proc = _proc.run(argv, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=timeout, **kwargs)
        except subprocess.TimeoutExpired:
            raise LifeboatError("%s did not finish within %d seconds (log: %s)" % (os.path.basename(argv[0]), timeout, log)) from None
    if proc.returncode != 0:
        with open(log, "rb") as handle:
            tail = " / ".join(line.strip() for line in handle.read()[-600:].decode("utf-8", "replace").splitlines() if line.strip())
        raise LifeboatError("%s exited with status %d: %s (log: %s)" % (os.path.basename(argv[0]), proc.returncode, tail, log))


def free_port():
    """A port no server on 127.0.0.1 uses now (only names the socket; nothing listens on TCP)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_version_num(text):
    """'150004' or '15.4' -> 150004; None (the newest binaries) when not given."""
    text = (text or "").strip()
    if not text:
        return None
    number = int(text) if text.isdigit() and len(text) >= 5 else pg.version_num(text)
    if number is None:
        raise OptionError("version", "version: %s is not a PostgreSQL version (150004 or 15.4)" % text)
    return number


def make_base(path):
    """The sandbox directory with its marker; refuse a non-empty directory without one."""
    if os.path.isdir(path):
        if os.listdir(path) and not os.path.exists(os.path.join(path, MARKER)):
            raise OptionError("path", "path: %s exists and is not a drill sandbox (no %s): choose a new directory" % (path, MARKER))
    else:
        os.makedirs(path, mode=0o711)
    os.chmod(path, 0o711)  # the server's account must traverse it
    with open(os.path.join(path, MARKER), "w", encoding="utf-8") as handle:
        handle.write("made by lifeboat.backup.drill_sandbox; removed by state=absent\n")


def start_postgresql(module):
    params = module.params
    wanted = server_version_num(params["version"])
    if wanted is None:
        found = pg.candidate_dirs("postgres", params["bin_dir"])
        if not found:
            raise pg.ToolError("no PostgreSQL server binaries (postgres) found; install the server package")
        wanted = pg.probe_version(os.path.join(found[0], "postgres"))[0]
    tools = pg.find_tools(wanted, TOOLS, params["bin_dir"], purpose="the drill sandbox")
    ids = account_ids(params)
    if ids:
        check_reachable(params["path"], ids, params["account"] or "postgres")
    make_base(params["path"])
    home = os.path.join(params["path"], params["name"])
    if os.path.exists(home):
        raise OptionError("name", "name: %s already exists in the sandbox %s: one server per name" % (params["name"], params["path"]))
    data, run = os.path.join(home, "data"), os.path.join(home, "run")
    for directory in (home, run):
        os.mkdir(directory, 0o700)
        if ids:
            os.chown(directory, *ids)
    started = time.time()
    log = os.path.join(home, "server.log")
    open(log, "ab").close()
    if ids:
        os.chown(log, *ids)
    initdb = [tools.path("initdb"), "--pgdata=" + data, "--username=postgres", "--auth-local=trust", "--auth-host=reject", "--encoding=UTF8", "--no-locale"]
    run_as(initdb + ["--no-sync"], ids, log, params["start_timeout"])
    port = free_port()
    with open(os.path.join(data, "postgresql.conf"), "a", encoding="utf-8") as handle:
        # A throw-away server: no TCP, no durability, small memory.
        settings = {"listen_addresses": "", "unix_socket_directories": run, "port": port, "fsync": "off", "shared_buffers": "64MB", "max_connections": "30"}
        handle.write("\n# lifeboat drill sandbox\n" + "".join("%s = '%s'\n" % item for item in settings.items()))
    with open(os.path.join(home, RECORD), "w", encoding="utf-8") as handle:
        json.dump({"kind": "postgresql", "bin_dir": tools.dir, "data_dir": data, "account": (params["account"] or "postgres") if ids else None}, handle)
    pg_ctl = [tools.path("pg_ctl"), "start", "--pgdata=" + data, "--log=" + log, "--wait", "--timeout=%d" % params["start_timeout"]]
    run_as(pg_ctl, ids, os.path.join(home, "pg_ctl.log"), params["start_timeout"] + 10)
    return dict(
        changed=True,
        host=run,
        port=port,
        user="postgres",
        data_dir=data,
        bin_dir=tools.dir,
        server_version=pg.probe_version(tools.path("postgres"))[1],
        seconds=round(time.time() - started, 3),
    )


def stop_one(home, timeout):
    """Stop the server recorded in ``home`` (immediately: its data is thrown away)."""
    with open(os.path.join(home, RECORD), encoding="utf-8") as handle:
        record = json.load(handle)
    if record["kind"] in search.ENGINES:
        return search.stop(record, timeout)
    if not os.path.exists(os.path.join(record["data_dir"], "postmaster.pid")):
        return False
    ids = None
    if os.geteuid() == 0 and record.get("account"):
        entry = pwd.getpwnam(record["account"])
        ids = (entry.pw_uid, entry.pw_gid)
    stop = [os.path.join(record["bin_dir"], "pg_ctl"), "stop", "--pgdata=" + record["data_dir"], "--mode=immediate", "--wait", "--timeout=%d" % timeout]
    run_as(stop, ids, os.path.join(home, "pg_ctl.log"), timeout + 10)
    return True


def start_search(module):
    """A search node in <path>/<name> (see _search_sandbox); its record is written as soon as it runs."""
    params = module.params
    make_base(params["path"])
    home = os.path.join(params["path"], params["name"])
    if os.path.exists(home):
        raise OptionError("name", "name: %s already exists in the sandbox %s: one server per name" % (params["name"], params["path"]))

    def reachable(ids):
        check_reachable(params["path"], ids, params["account"] or "the %s account" % params["kind"])

    return search.start(params, home, reachable, os.path.join(home, RECORD))


def remove(module):
    path = module.params["path"]
    result = dict(changed=False, stopped=[])
    if not os.path.exists(path):
        return result
    if os.path.isdir(path) and not os.listdir(path):
        os.rmdir(path)  # an empty directory (no server was started in it): nothing to stop
        result["changed"] = True
        return result
    if not os.path.exists(os.path.join(path, MARKER)):
        raise OptionError("path", "path: %s is not a drill sandbox (no %s); nothing removed" % (path, MARKER))
    for name in sorted(os.listdir(path)):
        home = os.path.join(path, name)
        if os.path.isfile(os.path.join(home, RECORD)) and stop_one(home, module.params["start_timeout"]):
            result["stopped"].append(name)
    shutil.rmtree(path)
    result["changed"] = True
    return result


def execute(module):
    if module.params["state"] == "absent":
        return remove(module)
    if module.params["state"] == "present":
        changed = not os.path.exists(os.path.join(module.params["path"], MARKER))
        make_base(module.params["path"])
        return dict(changed=changed, path=module.params["path"])
    if not module.params["name"]:
        raise OptionError("name", "name is required with state=started: the server's name in the sandbox (the component's)")
    if module.params["kind"] in search.ENGINES:
        return start_search(module)
    try:
        return start_postgresql(module)
    except pg.ToolError as exc:
        raise OptionError("bin_dir", "%s (for the drill sandbox: set bin_dir)" % exc) from None


def main():
    module = LifeboatModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            state=dict(type="str", choices=["started", "present", "absent"], default="started"),
            name=dict(type="str"),
            kind=dict(type="str", choices=["postgresql"] + list(search.ENGINES), default="postgresql"),
            version=dict(type="str"),
            bin_dir=dict(type="path"),
            account=dict(type="str"),
            home=dict(type="path"),
            java_home=dict(type="path"),
            heap=dict(type="str", default="512m"),
            repository_paths=dict(type="list", elements="path", default=[]),
            start_timeout=dict(type="int", default=120),
        ),
        supports_check_mode=False,
    )
    module.run(execute)


if __name__ == "__main__":
    main()
