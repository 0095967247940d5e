# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE module_utils of lifeboat.backup: not a public API, may change without notice.
"""The one exception family of the collection.

Every error a module_utils raises derives from ``LifeboatError``; a module never
builds a failure message in more than one place: ``_module.LifeboatModule.run`` turns
the exception into ``fail_json`` (docs/architecture.md, "Module anatomy").

An error carries:

- ``msg``: what failed and what to do, in the operator's words (an option name, a
  path, a command to run);
- ``changed``: whether something had already been changed when it was raised (a
  database dropped, files written, an image published);
- ``done``: what exactly was changed, one short line each, so the message can say
  how to go on;
- ``result``: extra values to return beside ``msg`` (never a secret).

No Ansible import here: standalone programs shipped with the collection may use it.
"""

from __future__ import annotations


class LifeboatError(Exception):
    """Base of every error raised by the collection's module_utils."""

    def __init__(self, msg, changed=None, done=None, **result):
        super().__init__(msg)
        self.msg = str(msg)
        # Whether the raiser said what changed (changed=True/False, or done); if not, the
        # values the module gathered before the failure decide (add_result).
        self._stated = changed is not None or bool(done)
        self.changed = bool(changed or done)
        self.done = list(done or [])
        self.result = result

    def __str__(self):
        return self.msg

    def with_done(self, *lines):
        """The same error, knowing that ``lines`` had already been changed."""
        self.done.extend(lines)
        self.changed = True
        self._stated = True
        return self

    def add_result(self, result):
        """The same error, returning also ``result`` (values gathered before it was raised).
        The error's own values win over the gathered ones; the gathered ``changed`` counts
        unless the error said itself what had changed (``changed=`` or ``done``)."""
        result = dict(result)
        gathered = bool(result.pop("changed", False))
        if not self._stated:
            self.changed = self.changed or gathered
        self.result = dict(result, **self.result)
        return self

    def fail_kwargs(self):
        """Keyword arguments for ``fail_json``."""
        kwargs = dict(self.result)
        msg = self.msg
        if self.done:
            msg = msg.rstrip()
            msg += "%s Already changed before the failure: %s." % ("" if msg.endswith((".", ":", ";")) else ".", "; ".join(self.done))
            kwargs["done"] = list(self.done)
        kwargs["msg"] = msg
        kwargs["changed"] = self.changed
        return kwargs


class OptionError(LifeboatError):
    """An option (or a combination of options) the module cannot work with. ``option``
    names it, so the role can translate it into its own variable's name."""

    def __init__(self, option, msg, **kwargs):
        super().__init__(msg, **kwargs)
        self.option = option
        self.result.setdefault("option", option)


class MissingLibraryError(LifeboatError):
    """A Python library the module needs cannot be imported on the managed node. ``msg`` is
    Ansible's ``missing_required_lib`` text (the raiser builds it: no Ansible import here);
    the import's traceback is returned as ``exception``, as ``fail_json`` expects it."""

    def __init__(self, library, msg, import_error=None):
        super().__init__(msg, exception=import_error)
        self.library = library
