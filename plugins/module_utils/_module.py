# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE module_utils of lifeboat.backup: not a public API, may change without notice.
"""The module anatomy shared by every lifeboat.backup module (docs/architecture.md).

    def main():
        module = LifeboatModule(
            argument_spec=dict(name=dict(type="str", required=True)),
            specs=[_image.DECRYPTION_SPEC],          # shared options, defined once
            supports_check_mode=True,
        )
        module.run(restore)                          # restore(module) -> result dict

``run`` calls the function, which validates, plans and executes (check mode stops
after the plan), and reports by returning the result. Any ``LifeboatError`` it
raises becomes ``fail_json`` here, with what was already changed; the failure hooks
(``on_failure``) run first, so a session component records the true reason before
the module exits.

Every result that ends in ``exit_json`` carries ``lifeboat_succeeded: true`` (SUCCESS_KEY),
and no failure does: the roles run modules with ``failed_when: false`` (no red ``fatal:`` in
a run that goes on as partial) and count as failed every result without it, so a crash,
a timeout or an action plugin's error can never pass for a success.
"""

from __future__ import annotations

import copy
import socket
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.lifeboat.backup.plugins.module_utils._errors import LifeboatError, MissingLibraryError

# The positive success marker of every lifeboat.backup module result (docs/architecture.md,
# "Module result contract").
SUCCESS_KEY = "lifeboat_succeeded"


def missing_library(library, import_error=None):
    """The MissingLibraryError for ``library`` (Ansible's missing_required_lib message), for
    module_utils that check a library before the module touches it."""
    return MissingLibraryError(library, missing_required_lib(library), import_error)


def merge_specs(argument_spec, specs=()):
    """One argument spec from the shared ones (deep-copied) and the module's own."""
    merged = {}
    for spec in specs:
        merged.update(copy.deepcopy(spec))
    merged.update(argument_spec or {})
    return merged


class LifeboatModule(AnsibleModule):
    """AnsibleModule with shared specs, one failure path and failure hooks."""

    def __init__(self, argument_spec=None, specs=(), **kwargs):
        super().__init__(argument_spec=merge_specs(argument_spec, specs), **kwargs)
        self.on_failure = []
        self._kept = None

    def warn(self, warning):
        """Ansible prints a module's warnings without the host: each names the node it is about."""
        host = socket.gethostname()
        text = str(warning)
        super().warn(text if text.startswith("on %s: " % host) else "on %s: %s" % (host, text))

    def exit_json(self, **kwargs):
        """Every successful result says so positively (SUCCESS_KEY); fail_json never does."""
        kwargs[SUCCESS_KEY] = True
        super().exit_json(**kwargs)

    def fail_json(self, *args, **kwargs):
        kwargs.pop(SUCCESS_KEY, None)  # a failure returning what a success had gathered
        super().fail_json(*args, **kwargs)

    def keep(self, result):
        """Return ``result`` (a dict the module goes on filling) with any failure too, so a
        failure says what had been found or done before it. Returns ``result``."""
        self._kept = result
        return result

    def require(self, library, available, import_error=None):
        """Fail with missing_required_lib unless ``available``; call it on the paths that
        need the library, before anything touches it."""
        if not available:
            self.fail(missing_library(library, import_error))

    def open_session(self, work_dir, writes_members=True):
        """The backup session a component module works in (SessionError when there is none).
        With ``writes_members``, also the libraries its members need (cryptography, zstandard)."""
        # Imported here: modules without a session (queue_drain, the _info modules) start faster.
        from ansible_collections.lifeboat.backup.plugins.module_utils import _age, _image, _session

        session = _session.Session(work_dir)
        if writes_members:
            if session.recipients:
                self.require("cryptography", _age.HAS_CRYPTOGRAPHY, _age.CRYPTOGRAPHY_IMPORT_ERROR)
            if session.compression == "zstd":
                self.require("zstandard", _image.HAS_ZSTANDARD, _image.ZSTANDARD_IMPORT_ERROR)
        return session

    def start_component(self, session, name, kind):
        """Record component ``name`` in ``session`` as running, and its failure if the module
        fails before it records a result itself."""
        component = session.component(name, kind)
        self.record_failure_in(component)
        return component

    def record_failure_in(self, component):
        """A failure hook that records the reason in ``component`` unless it already holds its
        result (a component that recorded its own failure keeps its own words)."""

        def hook(reason):
            if component.record.get("status") == "running":
                component.fail(reason)

        self.on_failure.append(hook)

    def fail(self, error):
        """Report a LifeboatError: hooks first, then fail_json."""
        self._run_hooks(error.msg)
        self.fail_json(**error.fail_kwargs())

    def _run_hooks(self, reason):
        hooks, self.on_failure = self.on_failure, []
        for hook in hooks:
            try:
                hook(reason)
            except Exception:  # noqa: BLE001 - a failing hook must not hide the failure itself
                self.warn("recording the failure failed: %s" % traceback.format_exc().splitlines()[-1])

    def run(self, execute):
        """``execute(module)`` returns the result dict, or raises LifeboatError."""
        try:
            result = execute(self)
        except LifeboatError as exc:
            if self._kept is not None:
                exc.add_result(self._kept)
            self.fail(exc)
        except Exception as exc:
            # A bug: record it as the component's reason, then let Ansible show the traceback.
            self._run_hooks("internal error (%s: %s); please report it" % (type(exc).__name__, exc))
            raise
        self.exit_json(**result)
