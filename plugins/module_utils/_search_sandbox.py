# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A throw-away Elasticsearch/OpenSearch node for a restore drill (drill_sandbox kind=elasticsearch
or opensearch): one node on 127.0.0.1, a port of its own, every directory (data, logs, repository,
configuration, temporary files) in the sandbox, started from an installed distribution - the one
the node runs (found from the running server's command line) or one given - never with
production's settings file or keystore."""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import time

from ansible_collections.lifeboat.backup.plugins.module_utils import _elasticsearch as es
from ansible_collections.lifeboat.backup.plugins.module_utils import _proc
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import LifeboatError, OptionError

ENGINES = ("elasticsearch", "opensearch")
JAR = re.compile(r"^(elasticsearch|opensearch)-(\d+)\.(\d+)\.(\d+)\.jar$")
# JVM options that name files: pointed into the sandbox, so a drill never writes into
# production's log directory (a package's jvm.options names /var/log/<engine>/gc.log).
JVM_FILES = (
    (re.compile(r"(-Xlog:[^\n]*?:file=)[^:\s]+"), "gc.log"),
    (re.compile(r"(-Xloggc:)\S+"), "gc.log"),
    (re.compile(r"(-XX:ErrorFile=)\S+"), "hs_err_pid%p.log"),
    (re.compile(r"(-XX:HeapDumpPath=)\S+"), "heapdump"),
)


class SearchSandboxError(LifeboatError):
    pass


def version_of(home, engine):
    """(major, minor, patch) of the distribution in ``home`` (its lib/<engine>-X.Y.Z.jar), or None."""
    try:
        names = os.listdir(os.path.join(home, "lib"))
    except OSError:
        return None
    for name in names:
        match = JAR.match(name)
        if match and match.group(1) == engine:
            return tuple(int(part) for part in match.groups()[1:])
    return None


def parse_version(text, option="version"):
    match = re.match(r"^\s*(\d+)\.(\d+)\.(\d+)", text or "")
    if not match:
        raise OptionError(option, "%s: %s is not a search engine version (such as 2.19.6)" % (option, text))
    return tuple(int(part) for part in match.groups())


def running_nodes(engine):
    """Distributions of the running ``engine`` servers on this host: dicts of home, conf, java, uid."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as handle:
                argv = handle.read().decode("utf-8", "replace").split("\0")
            settings = dict(arg[2:].split("=", 1) for arg in argv if arg.startswith("-D") and "=" in arg)
            prefix = "es" if engine == "elasticsearch" else "opensearch"
            home = settings.get(prefix + ".path.home")
            if not home or (engine == "elasticsearch" and not any("org.elasticsearch" in arg for arg in argv)):
                continue
            found.append(dict(home=home, conf=settings.get(prefix + ".path.conf"), java=_java_of(pid, argv), uid=os.stat("/proc/" + pid).st_uid))
        except (OSError, ValueError):
            continue  # gone meanwhile, or not ours to read
    return found


def _java_of(pid, argv):
    """The JDK a running server uses: from its executable, else from its argv[0]. Reading
    /proc/<pid>/exe needs ptrace rights over the process, which root lacks in a container
    without CAP_SYS_PTRACE (podman's default): the server must not be skipped for that."""
    for path in ("/proc/%s/exe" % pid, argv[0]):
        if os.path.isabs(path):
            try:
                return os.path.dirname(os.path.dirname(os.path.realpath(path)))
            except OSError:
                continue
    return None


def candidates(engine, home):
    """Distributions to choose from: ``home`` alone when given, else the running servers' and
    the packages' usual homes (/usr/share/<engine>, /opt/<engine>)."""
    if home:
        if not version_of(home, engine):
            raise OptionError("home", "home: %s holds no %s distribution (no lib/%s-X.Y.Z.jar)" % (home, engine, engine))
        return [dict(home=home, conf=None, java=None, uid=None, version=version_of(home, engine))]
    listed = running_nodes(engine) + [dict(home=path, conf=None, java=None, uid=None) for path in ("/usr/share/" + engine, "/opt/" + engine)]
    seen, unique = set(), []
    for entry in listed:
        key = os.path.realpath(entry["home"])
        if key not in seen and version_of(entry["home"], engine):
            seen.add(key)
            unique.append(dict(entry, version=version_of(entry["home"], engine)))
    return unique


def choose(engine, wanted, home):
    """The distribution of the version the snapshot was taken with, else the oldest newer one."""
    found = candidates(engine, home)
    if not found:
        raise OptionError(
            "home",
            "no %s distribution found (no running %s server, nothing in /usr/share/%s or /opt/%s): give its directory in home "
            "(the drill role's drill_search_home)" % (engine, engine, engine, engine),
        )
    if wanted is None:
        return max(found, key=lambda entry: entry["version"])
    usable = sorted((entry for entry in found if entry["version"] >= wanted), key=lambda entry: entry["version"])
    if not usable:
        versions = ", ".join("%s in %s" % (".".join(map(str, e["version"])), e["home"]) for e in found)
        raise OptionError(
            "home",
            "the snapshot was taken with %s %s and only older distributions are here (%s): a snapshot restores into the same "
            "version or a newer one; give one in home (drill_search_home)" % (engine, ".".join(map(str, wanted)), versions),
        )
    return usable[0]


def java_home(entry, given):
    """The JDK to run the node with: given, else the distribution's bundled one, else the
    running server's, else JAVA_HOME, else `java` on PATH."""
    options = [given, os.path.join(entry["home"], "jdk"), entry.get("java"), os.environ.get("JAVA_HOME")]
    java = shutil.which("java")
    if java:
        options.append(os.path.dirname(os.path.dirname(os.path.realpath(java))))
    for option in filter(None, options):
        if os.access(os.path.join(option, "bin", "java"), os.X_OK):
            return option
    raise OptionError("java_home", "java_home: no JDK found for %s (no bundled jdk, no JAVA_HOME, no java on PATH): give java_home" % entry["home"])


def account_ids(entry, account, engine):
    """(uid, gid) to run as when root (the engines refuse root): ``account``, else the running
    server's account, else an account named after the engine; None when not root."""
    if os.geteuid() != 0:
        return None
    try:
        if account:
            record = pwd.getpwnam(account)
        elif entry.get("uid"):
            record = pwd.getpwuid(entry["uid"])
        else:
            record = pwd.getpwnam(engine)
    except KeyError:
        raise OptionError("account", "account: no such user %s on this host; %s refuses to run as root" % (account or engine, engine)) from None
    return record.pw_uid, record.pw_gid


def copy_config(source, target, logs):
    """jvm.options (files pointed into the sandbox), jvm.options.d and log4j2.properties of
    the distribution; never production's settings file or keystore."""
    os.mkdir(target, 0o700)
    for name in ("jvm.options", "log4j2.properties"):
        if os.path.isfile(os.path.join(source, name)):
            shutil.copyfile(os.path.join(source, name), os.path.join(target, name))
    if os.path.isdir(os.path.join(source, "jvm.options.d")):
        shutil.copytree(os.path.join(source, "jvm.options.d"), os.path.join(target, "jvm.options.d"))
    for directory, _dirs, files in os.walk(target):
        for name in (n for n in files if n == "jvm.options" or n.endswith(".options")):
            path = os.path.join(directory, name)
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
            for pattern, leaf in JVM_FILES:
                text = pattern.sub(lambda match, leaf=leaf: match.group(1) + os.path.join(logs, leaf), text)
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(text)


def node_settings(home, engine, name, directories, repository_paths):
    settings = {
        "cluster.name": "lifeboat-drill-" + re.sub(r"[^a-z0-9_-]", "-", name.lower()),
        "node.name": "drill-1",
        "network.host": "127.0.0.1",  # loopback: development mode, reachable from this host only
        "http.port": 0,  # a free port, written to <logs>/http.ports
        "transport.port": 0,
        "node.portsfile": True,
        "discovery.type": "single-node",
        "path.data": directories["data"],
        "path.logs": directories["logs"],
        "path.repo": "[%s]" % ", ".join('"%s"' % path for path in [directories["repo"]] + list(repository_paths)),
        "cluster.routing.allocation.disk.threshold_enabled": False,  # a full shared disk must not block the drill
        "action.auto_create_index": False,  # nothing but the restore creates indices here
    }
    if engine == "elasticsearch" and os.path.isdir(os.path.join(home, "modules", "x-pack-security")):
        settings["xpack.security.enabled"] = False
    if engine == "elasticsearch" and os.path.isdir(os.path.join(home, "modules", "x-pack-ml")):
        settings["xpack.ml.enabled"] = False
    if os.path.isdir(os.path.join(home, "modules", "ingest-geoip")):
        settings["ingest.geoip.downloader.enabled"] = False
    if engine == "opensearch" and os.path.isdir(os.path.join(home, "plugins", "opensearch-security")):
        settings["plugins.security.disabled"] = True
    return settings


def environment(engine, java, directories, heap):
    prefix = "OPENSEARCH" if engine == "opensearch" else "ES"
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": directories["tmp"],
        "JAVA_HOME": java,
        prefix + "_JAVA_HOME": java,
        prefix + "_PATH_CONF": directories["config"],
        prefix + "_TMPDIR": directories["tmp"],
        prefix + "_JAVA_OPTS": "-Xms%s -Xmx%s -XX:-UsePerfData" % (heap, heap),
        "CLI_JAVA_OPTS": "-XX:-UsePerfData",  # the 8.x launcher JVM
    }


def tail(path, size=800):
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, os.path.getsize(path) - size))
            return " / ".join(line.strip() for line in handle.read().decode("utf-8", "replace").splitlines() if line.strip())
    except OSError:
        return ""


def wait_ready(process, directories, timeout, console):
    """The node's URL once it answers with status yellow or green; raise when it exits or times out."""
    deadline = time.time() + timeout
    ports = os.path.join(directories["logs"], "http.ports")
    url = None
    while time.time() < deadline:
        if process.poll() is not None:
            raise SearchSandboxError("the sandbox node exited with status %s: %s (log: %s)" % (process.returncode, tail(console), console))
        if url is None and os.path.isfile(ports):
            with open(ports, encoding="utf-8") as handle:
                first = handle.read().split()
            url = "http://%s" % first[0] if first else None
        if url:
            try:
                health = es.Client([url], retries=0, request_timeout=10).get("/_cluster/health", params={"wait_for_status": "yellow", "timeout": "5s"})
                if health.get("status") in ("yellow", "green"):
                    return url
            except es.SearchError:
                pass
        time.sleep(0.5)
    raise SearchSandboxError("the sandbox node did not answer within %d seconds: %s (log: %s)" % (timeout, tail(console), console))


def prepare(params, entry, home_dir, ids):
    """The node's directories and configuration in ``home_dir``, owned by ``ids`` when given."""
    engine = params["kind"]
    directories = {name: os.path.join(home_dir, name) for name in ("config", "data", "logs", "repo", "tmp")}
    os.mkdir(home_dir, 0o700)
    conf_source = entry.get("conf") or os.path.join(entry["home"], "config")
    if not os.path.isfile(os.path.join(conf_source, "jvm.options")) and os.path.isfile("/etc/%s/jvm.options" % engine):
        conf_source = "/etc/" + engine
    copy_config(conf_source, directories["config"], directories["logs"])
    for name in ("data", "logs", "repo", "tmp"):
        os.mkdir(directories[name], 0o700)
    settings = node_settings(entry["home"], engine, params["name"], directories, params["repository_paths"])
    lines = "".join("%s: %s\n" % (key, str(value).lower() if isinstance(value, bool) else value) for key, value in settings.items())
    with open(os.path.join(directories["config"], engine + ".yml"), "w", encoding="utf-8") as handle:
        handle.write("# lifeboat drill sandbox\n" + lines)
    open(os.path.join(directories["logs"], "console.log"), "ab").close()
    if ids:
        for directory, dirs, files in os.walk(home_dir):
            for name in [directory] + [os.path.join(directory, n) for n in dirs + files]:
                os.lchown(name, *ids)
    return directories


def launch(params, entry, java, directories, ids):
    """The node's process, in a process group of its own, its output in <logs>/console.log."""
    engine = params["kind"]
    kwargs = {"user": ids[0], "group": ids[1], "extra_groups": []} if ids else {}
    program = os.path.join(entry["home"], "bin", engine)
    with open(os.path.join(directories["logs"], "console.log"), "ab") as log:
        try:
            return _proc.popen(
                [program],
                env=environment(engine, java, directories, params["heap"]),
                cwd=os.path.dirname(directories["data"]),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: the drill stops all of it
                **kwargs,
            )
        except OSError as exc:
            who = pwd.getpwuid(ids[0]).pw_name if ids else "this account"
            raise OptionError("home", "home: %s cannot run %s: %s (give a distribution it can read in home)" % (who, program, exc.strerror)) from None


def start(params, home_dir, reachable, record_path):
    """Start the node in ``home_dir`` (a new directory of the sandbox; ``reachable(ids)`` raises
    when the node's account cannot reach it); its record (to stop it) goes to ``record_path``
    as soon as it runs. Return what the drill needs."""
    engine = params["kind"]
    es.check_libraries()
    entry = choose(engine, parse_version(params["version"]) if params["version"] else None, params["home"])
    java = java_home(entry, params["java_home"])
    ids = account_ids(entry, params["account"], engine)
    if ids:
        reachable(ids)
    directories = prepare(params, entry, home_dir, ids)
    started = time.time()
    process = launch(params, entry, java, directories, ids)
    record = {"kind": engine, "pgid": process.pid, "config": directories["config"]}
    with open(record_path, "w", encoding="utf-8") as handle:
        json.dump(record, handle)
    try:
        url = wait_ready(process, directories, params["start_timeout"], os.path.join(directories["logs"], "console.log"))
    except SearchSandboxError:
        stop(record, 30)
        raise
    return dict(
        changed=True,
        url=url,
        engine=engine,
        home=entry["home"],
        java_home=java,
        repository_dir=directories["repo"],
        data_dir=directories["data"],
        server_version="%s %s" % ({"opensearch": "OpenSearch"}.get(engine, "Elasticsearch"), ".".join(map(str, entry["version"]))),
        seconds=round(time.time() - started, 3),
    )


def group_alive(record):
    """Whether a process of the recorded group still runs a node of this sandbox."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.getpgid(int(pid)) != record["pgid"]:
                continue
            with open("/proc/%s/cmdline" % pid, "rb") as handle:
                if record["config"].encode() in handle.read():
                    return True
        except (OSError, ProcessLookupError):
            continue
    return False


def stop(record, timeout):
    """Stop the node's process group (TERM, then KILL after ``timeout`` seconds); False when
    nothing of it ran any more."""
    if not group_alive(record):
        return False
    try:
        os.killpg(record["pgid"], signal.SIGTERM)
        deadline = time.time() + timeout
        while time.time() < deadline and group_alive(record):
            time.sleep(0.3)
        if group_alive(record):
            os.killpg(record["pgid"], signal.SIGKILL)
            while group_alive(record) and time.time() < deadline + 10:
                time.sleep(0.2)
    except ProcessLookupError:
        pass
    return True
