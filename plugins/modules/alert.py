#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: alert
short_description: Send a backup event to e-mail, syslog / SIEM, webhooks and ping URLs
version_added: 0.2.0
description:
  - Sends one event (a run that failed or was partial, a storage target lost or full, a copy
    that failed, a stale backup, a verification or restore outcome) to every channel in
    O(alerts) that listens for it, and returns each channel's outcome.
  - A channel that cannot be reached, refuses the message or times out does not fail the task -
    alerts never change a verdict. The outcome says what went wrong, RV(summary) says it in one
    line for the run's summary, and a warning is printed.
  - The roles call it with the role variable C(lifeboat_alerts), configured once; see
    C(docs/operations.md).
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
extends_documentation_fragment:
  - lifeboat.backup._attributes
  - lifeboat.backup._alerts
attributes:
  check_mode:
    support: full
    details: Renders the message and lists the channels that would get it; sends nothing.
  diff_mode:
    support: none
options:
  event:
    description:
      - The event. C(kind) is required; C(node), C(backup_id), C(verdict), C(reason), C(image),
        C(components) (name to status, or to C(status) and C(error)), C(failures) (name to
        reason), C(target), C(time) and C(details) are used when present.
      - Values of keys that name a secret (password, passphrase, token ...) are masked, and user
        information in URLs is removed, before anything is sent.
    type: dict
    required: true
notes:
  - Runs where the task runs. From the control node, use C(delegate_to=localhost) and
    C(run_once) for one alert per run.
seealso:
  - module: lifeboat.backup.backup_info
"""

EXAMPLES = r"""
- name: Tell the on-call team that the backup of this node failed
  lifeboat.backup.alert:
    event:
      kind: run_failed
      node: "{{ inventory_hostname }}"
      backup_id: "{{ backup_result.backup_id }}"
      verdict: failed
      reason: "{{ backup_result.reason }}"
      failures: "{{ backup_result.failures }}"
    alerts:
      - type: email
        name: on-call mail
        host: smtp.example.com
        username: lifeboat
        password: "{{ vault_smtp_password }}"
        sender: lifeboat@example.com
        to: [oncall@example.com]
      - type: syslog
        host: siem.example.com
        protocol: tls
      - type: webhook
        url: "{{ vault_webhook_url }}"
        secret: "{{ vault_webhook_secret }}"
  delegate_to: localhost
"""

RETURN = r"""
outcomes:
  description:
    - One entry per channel, in the order of O(alerts) - C(channel) (name, or type and host),
      C(type), C(ok), C(attempts), C(detail) or C(error), C(skipped) when the channel does not
      listen for this kind of event, C(seconds).
  returned: always
  type: list
  elements: dict
  sample: [{channel: on-call mail, type: email, ok: true, attempts: 1, detail: sent to oncall@example.com, seconds: 0.21}]
delivered:
  description: Whether every channel that listens for the event got it.
  returned: always
  type: bool
  sample: true
summary:
  description: The outcomes in one line, for a run's summary.
  returned: always
  type: str
  sample: "alerts failed on webhook hooks.example.com #2 (HTTP 500 Internal Server Error); sent to on-call mail"
message:
  description: The one-line text of the event as the channels get it.
  returned: always
  type: str
  sample: "db1: backup failed (20261122T020000Z-3fa2c1d0) - verdict failed - reason: postgresql: pg_dump exited 1"
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

import re

from ansible_collections.lifeboat.backup.plugins.module_utils import _alerts
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import OptionError
from ansible_collections.lifeboat.backup.plugins.module_utils._module import LifeboatModule

KIND = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def validate(params):
    kind = (params["event"] or {}).get("kind")
    if not isinstance(kind, str) or not KIND.match(kind):
        raise OptionError("event", "event.kind is required: a word such as run_failed, copy_failed or backup_stale (got %r)" % (kind,))
    try:
        return _alerts.check_channels(params["alerts"])
    except _alerts.ChannelError as exc:
        raise OptionError("alerts", str(exc)) from None


def send(module):
    channels = validate(module.params)
    event = _alerts.normalise(module.params["event"])
    result = dict(changed=False, message=_alerts.summary_line(event))
    if module.check_mode:
        outcomes = [
            dict(channel=_alerts.label_of(c, i), type=c["type"], ok=True, attempts=0, skipped=not _alerts.wants(c, event)) for i, c in enumerate(channels)
        ]
        would = [o["channel"] for o in outcomes if not o["skipped"]]
        return dict(result, outcomes=outcomes, delivered=True, summary="would send to %s" % (", ".join(would) or "no channel"))
    outcomes = _alerts.send(event, channels)
    summary = _alerts.summarise(outcomes)
    delivered = all(o.get("ok") for o in outcomes)
    if not delivered:
        module.warn(summary)
    sent = any(o.get("ok") and not o.get("skipped") for o in outcomes)
    return dict(result, changed=sent, outcomes=outcomes, delivered=delivered, summary=summary)


def main():
    module = LifeboatModule(
        argument_spec=dict(event=dict(type="dict", required=True)),
        specs=[_alerts.ALERTS_SPEC],
        supports_check_mode=True,
    )
    module.run(send)


if __name__ == "__main__":
    main()
