# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE doc fragment of lifeboat.backup.

from __future__ import annotations


class ModuleDocFragment:
    # Where a Neo4j installation keeps its files, and how to tell whether it runs.
    DOCUMENTATION = r"""
options:
  home:
    description:
      - Neo4j home directory (C(NEO4J_HOME)). Relative directories in C(neo4j.conf) are
        relative to it.
      - The Debian/RPM packages use C(/var/lib/neo4j); a tarball install the unpacked directory.
    type: path
    default: /var/lib/neo4j
    version_added: 0.1.0
  config:
    description:
      - Path of C(neo4j.conf). Read for C(server.directories.data), C(server.directories.run)
        and the Bolt listen address (the Neo4j 4 names C(dbms.directories.data) ... are
        understood too).
      - Default is C(<home>/conf/neo4j.conf), else C(/etc/neo4j/neo4j.conf), else none
        (Neo4j's defaults).
    type: path
    version_added: 0.1.0
  data_dir:
    description:
      - The Neo4j data directory (the one holding C(databases/) and C(transactions/)).
        Default is the one C(neo4j.conf) names, else C(<home>/data).
      - When it differs from the one C(neo4j.conf) names, C(neo4j-admin) (C(method=dump) components)
        is given it too, through a temporary C(--additional-config) file, so that it dumps from and
        loads into this directory, never the configured server's.
    type: path
    version_added: 0.1.0
  pid_file:
    description:
      - The pid file C(neo4j start) writes. Default is C(neo4j.pid) in the run directory of
        C(neo4j.conf), else C(<home>/run/neo4j.pid).
    type: path
    version_added: 0.1.0
  bolt_address:
    description:
      - C(host:port) probed to see whether a server answers. Default is the Bolt listen
        address of C(neo4j.conf) (C(127.0.0.1:7687) when unset; a wildcard address is probed
        on C(127.0.0.1)). An empty string turns the probe off, for example when another
        Neo4j runs on this host on the same port.
    type: str
    version_added: 0.1.0
  neo4j_admin:
    description:
      - Path of C(neo4j-admin), for the C(dump) method. Default is C(<home>/bin/neo4j-admin),
        else C(neo4j-admin) on the PATH. It runs with C(NEO4J_HOME) and C(NEO4J_CONF) set from
        O(home) and O(config).
    type: path
    version_added: 0.1.0
notes:
  - Neo4j community edition has no online backup, so these modules work only on a stopped
    server. They refuse to run, with the evidence, when any of these says Neo4j runs - the
    pid file names a live process; a process holds the lock Neo4j keeps on
    C(<data>/databases/store_lock) or a C(databases/<db>/database_lock) (asked with
    C(fcntl(F_GETLK)), which takes no lock); or the Bolt address accepts connections.
"""
