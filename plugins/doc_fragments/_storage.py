# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE doc fragment of lifeboat.backup.

from __future__ import annotations

# The options of one storage target, documented twice: for one target (``target``) and for a
# list of them (``targets``). ansible-test's yamllint reads doc fragments as string literals
# only, so the two cannot share a string; tests/unit/plugins/test_doc_fragments.py checks that
# they say the same. The spec is plugins/module_utils/_storage.py TARGET_OPTIONS; keep them in step.


class ModuleDocFragment:
    # Modules that work on one storage target.
    DOCUMENTATION = r"""
options:
  target:
    description:
      - The storage target, one of the descriptions in docs/storage.md. Roles pass one item
        of C(backup_storage) here.
    type: dict
    required: true
    version_added: 0.2.0
    suboptions:
      type:
        description:
          - The protocol. C(local) is a directory on the node; C(nfs) an NFS v4.x export
            (through the kernel client); C(smb) an SMB 2/3 share (no mount); C(rsync) rsync
            over SSH; C(sftp) SFTP over SSH; C(ftp) plain FTP (password in clear, only
            when the server offers nothing else); C(ftps) explicit FTPS (AUTH TLS);
            C(s3) S3-compatible object storage.
          - See docs/storage.md for what the remote side needs for each.
        type: str
        required: true
        choices: [local, nfs, smb, rsync, sftp, ftp, ftps, s3]
      name:
        description:
          - A short name for this target, used in the node's status, the audit trail,
            alerts and the plan. Defaults to the target's location (a URL without secrets).
        type: str
      path:
        description:
          - C(local) - the directory on the node (absolute; it must exist).
          - C(nfs) with O(target.export) - the directory inside the export (relative;
            default the export's top). C(nfs) without O(target.export) - an absolute path
            inside an NFS mount that already exists on the node.
          - C(smb) - the directory inside O(target.share) (default its top).
          - C(rsync), C(sftp) - the directory on the server (absolute, or relative to the
            login directory).
          - C(ftp), C(ftps) - the directory relative to the login directory (default the
            login directory itself).
          - C(s3) - a key prefix inside O(target.bucket) (default none).
        type: str
      host:
        description:
          - Server name or address (not for C(local); for C(nfs) only with O(target.export)).
        type: str
      port:
        description:
          - Server port. Defaults to the protocol's (445, 22, 21; S3 takes it from
            O(target.endpoint_url)).
        type: int
      user:
        description:
          - Login name. For C(smb), C(DOMAIN\user) or C(user@domain) for a domain account.
        type: str
      password:
        description:
          - Password (C(smb), C(sftp), C(ftp), C(ftps)). Any character is accepted.
          - Never logged, never returned, never on a command line or in a file.
        type: str
      domain:
        description:
          - C(smb) - the domain of O(target.user), when not written into it.
        type: str
      share:
        description:
          - C(smb) - the share name.
        type: str
      encrypt:
        description:
          - C(smb) - require SMB3 encryption of every message (the default). Set to V(false)
            only for a server that cannot encrypt; messages are still signed.
        type: bool
        default: true
      export:
        description:
          - C(nfs) - the export on O(target.host) to mount (C(/srv/backups)). The module
            mounts it on a private mount point for the transfer and unmounts it afterwards
            (root needed). Without it, O(target.path) must lie in an existing NFS mount.
        type: str
      nfs_version:
        description:
          - C(nfs) - the NFS version to mount with (C(vers=)), and the one an existing
            mount must use. V(4) lets the client and server agree on the highest 4.x.
        type: str
        choices: ['4', '4.0', '4.1', '4.2']
        default: '4'
      mount_options:
        description:
          - C(nfs) - extra mount options (C(sec=krb5p), C(proto=tcp), ...) for a mount made
            by the module.
        type: list
        elements: str
      private_key:
        description:
          - C(rsync), C(sftp) - the SSH private key (OpenSSH or PEM text). It is handed to a
            private ssh-agent (rsync) or kept in memory (sftp); never written to disk.
          - Never logged, never returned.
        type: str
      private_key_file:
        description:
          - C(rsync), C(sftp) - path on the node of the SSH private key, instead of
            O(target.private_key).
        type: path
      private_key_passphrase:
        description:
          - Passphrase of the private key, when it has one. Never logged, never returned.
        type: str
      known_hosts:
        description:
          - C(rsync), C(sftp) - the server's host key as C(known_hosts) lines (what
            C(ssh-keyscan -p PORT HOST) prints, checked by you). The connection is refused
            when the server shows another key.
        type: str
      known_hosts_file:
        description:
          - C(rsync), C(sftp) - a C(known_hosts) file on the node, instead of or beside
            O(target.known_hosts). With O(target.host_key_checking=accept_new), a new host's
            key is added to it.
        type: path
      host_key_checking:
        description:
          - C(rsync), C(sftp) - V(strict) refuses a server whose key is not in
            O(target.known_hosts) or O(target.known_hosts_file). V(accept_new) trusts a
            server seen for the first time (trust on first use, returned, and recorded in
            O(target.known_hosts_file) when given) but still refuses a changed key.
        type: str
        choices: [strict, accept_new]
        default: strict
      validate_certs:
        description:
          - C(ftps), C(s3) - verify the server's TLS certificate and name. Only set V(false)
            for a test bench.
        type: bool
        default: true
      ca_file:
        description:
          - C(ftps), C(s3) - a PEM file of CA certificates to verify the server with, instead
            of the system's.
        type: path
      passive:
        description:
          - C(ftp), C(ftps) - passive mode (the client opens the data connections).
        type: bool
        default: true
      bucket:
        description:
          - C(s3) - the bucket (it must exist).
        type: str
      endpoint_url:
        description:
          - C(s3) - the service endpoint (C(https://s3.example.net:9000)); default AWS.
        type: str
      region:
        description:
          - C(s3) - the region (default C(us-east-1)).
        type: str
      access_key:
        description:
          - C(s3) - the access key id. Without it, boto3's usual sources apply (environment,
            instance profile).
        type: str
      secret_key:
        description:
          - C(s3) - the secret access key. Never logged, never returned.
        type: str
      session_token:
        description:
          - C(s3) - a session token for temporary credentials. Never logged, never returned.
        type: str
      addressing_style:
        description:
          - C(s3) - V(path) (C(endpoint/bucket/key), what most self-hosted servers need),
            V(virtual) (C(bucket.endpoint/key)) or V(auto).
        type: str
        choices: [auto, path, virtual]
        default: auto
      timeout:
        description:
          - Seconds to wait for a connection or an answer before the attempt fails.
        type: int
        default: 30
      retries:
        description:
          - How many times a transfer interrupted by a network error or timeout is tried
            again (with backoff, resuming where the protocol allows).
        type: int
        default: 3
      retry_delay:
        description:
          - Seconds before the first retry; doubled for each further one (at most 30 s).
        type: float
        default: 1.0
      bwlimit:
        description:
          - Bandwidth limit of transfers, in KiB/s (average). No limit by default.
        type: int

notes:
  - Secrets in O(target) are never written to disk, never put on a command line and never
    returned. SSH private keys given as text go to a private ssh-agent (rsync) or stay in
    memory (sftp).
requirements:
  - C(smb) needs the Python library smbprotocol; C(sftp) paramiko; C(s3) boto3; C(rsync)
    the rsync and ssh programs; C(nfs) with O(target.export) the mount program with NFS
    support (nfs-common) and root. Each is needed only for its own type.
"""

    # Modules that look at several targets.
    TARGETS = r"""
options:
  targets:
    description:
      - Storage targets, each described as in docs/storage.md.
    type: list
    elements: dict
    default: []
    version_added: 0.2.0
    suboptions:
      type:
        description:
          - The protocol. C(local) is a directory on the node; C(nfs) an NFS v4.x export
            (through the kernel client); C(smb) an SMB 2/3 share (no mount); C(rsync) rsync
            over SSH; C(sftp) SFTP over SSH; C(ftp) plain FTP (password in clear, only
            when the server offers nothing else); C(ftps) explicit FTPS (AUTH TLS);
            C(s3) S3-compatible object storage.
          - See docs/storage.md for what the remote side needs for each.
        type: str
        required: true
        choices: [local, nfs, smb, rsync, sftp, ftp, ftps, s3]
      name:
        description:
          - A short name for this target, used in the node's status, the audit trail,
            alerts and the plan. Defaults to the target's location (a URL without secrets).
        type: str
      path:
        description:
          - C(local) - the directory on the node (absolute; it must exist).
          - C(nfs) with O(targets[].export) - the directory inside the export (relative;
            default the export's top). C(nfs) without O(targets[].export) - an absolute path
            inside an NFS mount that already exists on the node.
          - C(smb) - the directory inside O(targets[].share) (default its top).
          - C(rsync), C(sftp) - the directory on the server (absolute, or relative to the
            login directory).
          - C(ftp), C(ftps) - the directory relative to the login directory (default the
            login directory itself).
          - C(s3) - a key prefix inside O(targets[].bucket) (default none).
        type: str
      host:
        description:
          - Server name or address (not for C(local); for C(nfs) only with O(targets[].export)).
        type: str
      port:
        description:
          - Server port. Defaults to the protocol's (445, 22, 21; S3 takes it from
            O(targets[].endpoint_url)).
        type: int
      user:
        description:
          - Login name. For C(smb), C(DOMAIN\user) or C(user@domain) for a domain account.
        type: str
      password:
        description:
          - Password (C(smb), C(sftp), C(ftp), C(ftps)). Any character is accepted.
          - Never logged, never returned, never on a command line or in a file.
        type: str
      domain:
        description:
          - C(smb) - the domain of O(targets[].user), when not written into it.
        type: str
      share:
        description:
          - C(smb) - the share name.
        type: str
      encrypt:
        description:
          - C(smb) - require SMB3 encryption of every message (the default). Set to V(false)
            only for a server that cannot encrypt; messages are still signed.
        type: bool
        default: true
      export:
        description:
          - C(nfs) - the export on O(targets[].host) to mount (C(/srv/backups)). The module
            mounts it on a private mount point for the transfer and unmounts it afterwards
            (root needed). Without it, O(targets[].path) must lie in an existing NFS mount.
        type: str
      nfs_version:
        description:
          - C(nfs) - the NFS version to mount with (C(vers=)), and the one an existing
            mount must use. V(4) lets the client and server agree on the highest 4.x.
        type: str
        choices: ['4', '4.0', '4.1', '4.2']
        default: '4'
      mount_options:
        description:
          - C(nfs) - extra mount options (C(sec=krb5p), C(proto=tcp), ...) for a mount made
            by the module.
        type: list
        elements: str
      private_key:
        description:
          - C(rsync), C(sftp) - the SSH private key (OpenSSH or PEM text). It is handed to a
            private ssh-agent (rsync) or kept in memory (sftp); never written to disk.
          - Never logged, never returned.
        type: str
      private_key_file:
        description:
          - C(rsync), C(sftp) - path on the node of the SSH private key, instead of
            O(targets[].private_key).
        type: path
      private_key_passphrase:
        description:
          - Passphrase of the private key, when it has one. Never logged, never returned.
        type: str
      known_hosts:
        description:
          - C(rsync), C(sftp) - the server's host key as C(known_hosts) lines (what
            C(ssh-keyscan -p PORT HOST) prints, checked by you). The connection is refused
            when the server shows another key.
        type: str
      known_hosts_file:
        description:
          - C(rsync), C(sftp) - a C(known_hosts) file on the node, instead of or beside
            O(targets[].known_hosts). With O(targets[].host_key_checking=accept_new), a new host's
            key is added to it.
        type: path
      host_key_checking:
        description:
          - C(rsync), C(sftp) - V(strict) refuses a server whose key is not in
            O(targets[].known_hosts) or O(targets[].known_hosts_file). V(accept_new) trusts a
            server seen for the first time (trust on first use, returned, and recorded in
            O(targets[].known_hosts_file) when given) but still refuses a changed key.
        type: str
        choices: [strict, accept_new]
        default: strict
      validate_certs:
        description:
          - C(ftps), C(s3) - verify the server's TLS certificate and name. Only set V(false)
            for a test bench.
        type: bool
        default: true
      ca_file:
        description:
          - C(ftps), C(s3) - a PEM file of CA certificates to verify the server with, instead
            of the system's.
        type: path
      passive:
        description:
          - C(ftp), C(ftps) - passive mode (the client opens the data connections).
        type: bool
        default: true
      bucket:
        description:
          - C(s3) - the bucket (it must exist).
        type: str
      endpoint_url:
        description:
          - C(s3) - the service endpoint (C(https://s3.example.net:9000)); default AWS.
        type: str
      region:
        description:
          - C(s3) - the region (default C(us-east-1)).
        type: str
      access_key:
        description:
          - C(s3) - the access key id. Without it, boto3's usual sources apply (environment,
            instance profile).
        type: str
      secret_key:
        description:
          - C(s3) - the secret access key. Never logged, never returned.
        type: str
      session_token:
        description:
          - C(s3) - a session token for temporary credentials. Never logged, never returned.
        type: str
      addressing_style:
        description:
          - C(s3) - V(path) (C(endpoint/bucket/key), what most self-hosted servers need),
            V(virtual) (C(bucket.endpoint/key)) or V(auto).
        type: str
        choices: [auto, path, virtual]
        default: auto
      timeout:
        description:
          - Seconds to wait for a connection or an answer before the attempt fails.
        type: int
        default: 30
      retries:
        description:
          - How many times a transfer interrupted by a network error or timeout is tried
            again (with backoff, resuming where the protocol allows).
        type: int
        default: 3
      retry_delay:
        description:
          - Seconds before the first retry; doubled for each further one (at most 30 s).
        type: float
        default: 1.0
      bwlimit:
        description:
          - Bandwidth limit of transfers, in KiB/s (average). No limit by default.
        type: int
"""
