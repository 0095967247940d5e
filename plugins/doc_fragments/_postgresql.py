# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE doc fragment of lifeboat.backup.

from __future__ import annotations


class ModuleDocFragment:
    # Connection options of the postgresql_* modules (module_utils._postgresql.connection_argument_spec).
    DOCUMENTATION = r"""
options:
  login_host:
    description:
      - Host name or IP address of the PostgreSQL server.
      - Without O(login_host) and O(login_unix_socket), libpq's default applies (the unix socket
        in C(/var/run/postgresql) on Debian, or E(PGHOST)).
    type: str
    aliases: [host]
    version_added: 0.1.0
  port:
    description:
      - TCP port of the server (also the number in the unix socket's file name).
    type: int
    default: 5432
    aliases: [login_port]
    version_added: 0.1.0
  login_unix_socket:
    description:
      - Directory of the server's unix socket, for example C(/var/run/postgresql).
      - Mutually exclusive with O(login_host).
    type: path
    aliases: [unix_socket]
    version_added: 0.1.0
  login_user:
    description:
      - Role to connect as. Backups need a superuser (or a role that can read every table
        and, for role passwords, C(pg_authid)); O(lifeboat.backup.postgresql_basebackup#module:login_user)
        needs the C(REPLICATION) attribute.
    type: str
    default: postgres
    aliases: [user]
    version_added: 0.1.0
  login_password:
    description:
      - Password of O(login_user). Without it, peer authentication, C(~/.pgpass) or E(PGPASSWORD)
        of the managed node apply.
      - Never logged and never returned. The client tools receive it in a private C(0600)
        password file (E(PGPASSFILE)) that is removed afterwards - never on a command line.
    type: str
    aliases: [password]
    version_added: 0.1.0
  login_db:
    description:
      - Database to connect to for cluster-wide queries.
    type: str
    default: postgres
    version_added: 0.1.0
  ssl_mode:
    description:
      - Whether and how TLS is used (libpq C(sslmode)).
      - C(verify-full) checks the certificate chain against O(ca_cert) and the host name.
    type: str
    choices: [disable, allow, prefer, require, verify-ca, verify-full]
    default: prefer
    version_added: 0.1.0
  ca_cert:
    description:
      - CA certificate(s) that must have signed the server's certificate (libpq C(sslrootcert)).
    type: path
    aliases: [ssl_rootcert]
    version_added: 0.1.0
  ssl_cert:
    description:
      - Client certificate for certificate authentication (libpq C(sslcert)).
    type: path
    version_added: 0.1.0
  ssl_key:
    description:
      - Private key of O(ssl_cert) (libpq C(sslkey)); the file must be C(0600).
    type: path
    version_added: 0.1.0
  connect_timeout:
    description:
      - Seconds to wait for a connection before giving up.
    type: int
    default: 10
    version_added: 0.1.0
  client_bin_dir:
    description:
      - Directory holding the PostgreSQL client tools (C(pg_dump), C(pg_restore), ...).
      - By default the tools of the server's major version are looked for in
        C(/usr/lib/postgresql/<major>/bin) (Debian, Ubuntu), C(/usr/pgsql-<major>/bin) (RHEL)
        and E(PATH); a newer major version is used when the same one is missing. Tools older
        than the server are refused.
    type: path
    version_added: 0.1.0
requirements:
  - psycopg 3 (or psycopg2) Python library on the managed node, in the Python that runs the module.
  - PostgreSQL client tools of the server's major version (or newer) on the managed node,
    for the modules that dump, restore or copy (Debian package C(postgresql-client-<major>)).
notes:
  - All postgresql_* modules belong to the action group C(lifeboat.backup.postgresql), so the
    connection can be set once with C(module_defaults).
"""
