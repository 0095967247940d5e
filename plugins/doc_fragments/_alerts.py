# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE doc fragment of lifeboat.backup.

from __future__ import annotations


class ModuleDocFragment:
    # Alert channels (module_utils/_alerts.py CHANNEL_OPTIONS), configured once for the roles
    # (role variable lifeboat_alerts) and passed as they are.
    DOCUMENTATION = r"""
options:
  alerts:
    description:
      - Where alerts go, one entry per channel. A channel that cannot be reached never changes
        a verdict; its outcome is returned and reported.
      - Types are V(email) (SMTP with STARTTLS, implicit TLS or none, optional authentication),
        V(syslog) (RFC 5424 over UDP, TCP with newline framing, or TLS with octet counting,
        for a SIEM), V(webhook) (JSON POST, optional HMAC-SHA256 signature header, retries) and
        V(ping) (a healthchecks.io-style URL called on start, success and failure).
      - No message holds a secret. Channels are named in results by O(alerts[].name), or by
        type and host - never by URL, as a webhook or ping URL is often a credential.
    type: list
    elements: dict
    default: []
    version_added: 0.2.0
    suboptions:
      type:
        description: Kind of channel.
        type: str
        required: true
        choices: [email, syslog, webhook, ping]
      name:
        description: A label for results and summaries, for example C(oncall mail).
        type: str
      events:
        description:
          - Event kinds this channel hears (C(run_failed), C(run_partial), C(run_succeeded),
            C(run_started), C(storage_unreachable), C(mount_lost), C(target_full),
            C(copy_failed), C(backup_stale), C(verification_failed), C(restore_finished),
            C(restore_failed), and the kinds other parts of the collection send), C(problems)
            for every warning and error, or C(all).
          - Default C(problems); for a V(ping) channel, the start, success, partial and failure
            of runs.
        type: list
        elements: str
      timeout:
        description: Seconds to wait for the receiver, per attempt.
        type: float
        default: 10.0
      retries:
        description:
          - Attempts in all (at least 1). Default 3 for V(webhook) and V(ping), 2 for V(email)
            and V(syslog). The pause between attempts starts at O(alerts[].retry_delay) and doubles.
        type: int
      retry_delay:
        description: Seconds before the second attempt.
        type: float
        default: 2.0
      validate_certs:
        description: Verify the receiver's TLS certificate (V(email), V(syslog) with TLS, https URLs).
        type: bool
        default: true
      ca_file:
        description: CA certificates (PEM) to verify the receiver with, instead of the system's.
        type: path
      host:
        description: SMTP server (V(email)) or syslog collector (V(syslog)).
        type: str
      port:
        description:
          - Receiver port. Default 587 for STARTTLS, 465 for TLS, 25 without; 514 for syslog
            over UDP or TCP, 6514 over TLS.
        type: int
      security:
        description:
          - V(email) - V(starttls) (refused when the server does not offer it), V(tls)
            (implicit TLS, SMTPS) or V(none). Authentication is refused with V(none).
        type: str
        choices: [starttls, tls, none]
        default: starttls
      username:
        description: V(email) - SMTP user (with O(alerts[].password)).
        type: str
      password:
        description: V(email) - SMTP password.
        type: str
      sender:
        description: V(email) - the From address.
        type: str
      to:
        description: V(email) - recipients.
        type: list
        elements: str
      subject_prefix:
        description: V(email) - text before each subject.
        type: str
        default: "[lifeboat]"
      protocol:
        description: V(syslog) - V(udp), V(tcp) (newline framing, RFC 6587) or V(tls) (octet counting, RFC 5425).
        type: str
        choices: [udp, tcp, tls]
        default: udp
      facility:
        description: V(syslog) - the facility of the messages.
        type: str
        default: daemon
        choices: [auth, authpriv, cron, daemon, ftp, kern, local0, local1, local2, local3, local4, local5, local6, local7, lpr, mail, news, syslog, user, uucp]
      app_name:
        description: V(syslog) - the APP-NAME field.
        type: str
        default: lifeboat
      client_cert_file:
        description: V(syslog) over TLS - a client certificate (PEM) for collectors that ask for one.
        type: path
      client_key_file:
        description: V(syslog) over TLS - the client certificate's private key.
        type: path
      url:
        description:
          - V(webhook) - where the JSON event is POSTed. V(ping) - the check's URL; C(/start)
            and C(/fail) are appended for a start and a failure.
        type: str
      secret:
        description:
          - V(webhook) - HMAC-SHA256 key. The header O(alerts[].signature_header) then carries
            C(sha256=) and the hex HMAC of the raw body.
        type: str
      signature_header:
        description: V(webhook) - the header that carries the signature.
        type: str
        default: X-Lifeboat-Signature
      headers:
        description: V(webhook), V(ping) - extra HTTP headers (for example an authorization token).
        type: dict
      start_suffix:
        description: V(ping) - appended to the URL for a start.
        type: str
        default: /start
      fail_suffix:
        description: V(ping) - appended to the URL for a failure (partial included).
        type: str
        default: /fail
"""
