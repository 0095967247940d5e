# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE module_utils of lifeboat.backup: not a public API, may change without notice.
"""Retention: which items of a history to keep, which to remove, and the rule that decided.

One policy vocabulary for everything the collection keeps over time (node images, copies
on storage targets, search snapshots, WAL segments, secret bundles, table archives): the
restic ``forget`` model plus the collection's guards. Pure: no I/O, no clock (``now`` is
passed in), no Ansible import, so a standalone program can use it as well as a module.

An *item* is a dict::

    {"name": "20261122T020000Z-db1.zip",  # unique within one call
     "time": 1795312800.0,                # epoch seconds (UTC); an ISO 8601 string is read too
     "verdict": "success",                # success | partial | failed | anything else = unknown
     "pinned": False,                     # never removed while pinned
     "series": "db1",                     # the policy applies per series (a node); default one series
     "group": "20261122T020000Z-3fa2c1d0"}  # a cluster run (backup id); see ``together``

Other keys are carried along untouched.

The policy (``parse_policy`` checks it and names the option at fault):

- ``keep_last``: the newest N successful items;
- ``keep_hourly`` / ``keep_daily`` / ``keep_weekly`` / ``keep_monthly`` / ``keep_yearly``: the
  newest successful item of each of the last N hours / days / ISO weeks / months / years that
  have one (calendar periods in UTC), as restic counts them;
- ``keep_within``: every successful item younger than this duration;
- ``max_age``: a ceiling - a successful item older than this is removed even when a rule above
  selects it; given alone, everything younger is kept;
- ``min_count`` (at least 1, default 1): the newest N successful items of each series are kept
  whatever the rules say - the newest good backup survives any number of newer failed ones
  and any policy;
- ``pattern``: only items whose name matches this shell pattern are considered; the others
  are left alone (action ``ignored``).

How each item is decided, first rule that applies:

1. pinned: kept;
2. not ``success``, ``partial`` or ``failed`` (still running, unreadable): kept - retention
   never removes what it cannot judge;
3. ``partial`` / ``failed``: counted apart from the successful ones (they fill no keep_* slot);
   removed once a newer successful item of the series exists, or when older than ``max_age``;
   kept otherwise (it may hold the newest data there is);
4. successful and among the newest ``min_count`` of its series: kept;
5. successful, older than ``max_age``: removed;
6. successful and selected by a keep_* rule (or within ``keep_within``): kept, naming the rules;
7. successful, no keep_* rule given (``max_age`` alone): kept;
8. otherwise removed, naming the rules that did not select it.

With ``together`` (a cluster run's images are kept or removed together), an item that would be
removed is kept when another item of its ``group`` is kept: a run is never left half-deleted.
"""

from __future__ import annotations

import calendar
import fnmatch
import re
import time

from ansible_collections.lifeboat.backup.plugins.module_utils._errors import OptionError

KEEP_RULES = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")
JUDGED = ("success", "partial", "failed")

# The ``retention`` option of a module (doc fragment ``lifeboat.backup._retention``).
POLICY_OPTIONS = dict(
    keep_last=dict(type="int"),
    keep_hourly=dict(type="int"),
    keep_daily=dict(type="int"),
    keep_weekly=dict(type="int"),
    keep_monthly=dict(type="int"),
    keep_yearly=dict(type="int"),
    keep_within=dict(type="str"),
    max_age=dict(type="str"),
    min_count=dict(type="int", default=1),
    pattern=dict(type="str"),
)
RETENTION_SPEC = dict(retention=dict(type="dict", required=True, options=POLICY_OPTIONS))
# Where retention may be left out (doc fragment lifeboat.backup._retention.optional).
OPTIONAL_RETENTION_SPEC = dict(retention=dict(type="dict", options=POLICY_OPTIONS))

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w|y)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000, None: 1}


class PolicyError(OptionError):
    """A retention policy that cannot be applied; ``option`` names the key at fault."""


def parse_duration(text):
    """Seconds from ``30d``, ``12h``, ``90m``, ``45s``, ``2w``, ``1y`` or a number of seconds."""
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError("%r is not a duration; use a number with a unit: 45s, 90m, 12h, 30d, 2w, 1y" % (text,))
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def format_duration(seconds):
    """``3d 4h``, ``2h 5m``, ``40s``: an age as an operator reads it."""
    seconds = int(round(seconds))
    if seconds < 0:
        return "-" + format_duration(-seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append("%d%s" % (seconds // size, unit))
            seconds %= size
        if len(parts) == 2:
            break
    return " ".join(parts)


class Policy:
    """A checked retention policy. Build it with ``parse_policy``."""

    def __init__(self, keep=None, keep_within=None, max_age=None, min_count=1, pattern=None):
        self.keep = dict(keep or {})  # rule name -> count (only the rules given)
        self.keep_within = keep_within  # seconds or None
        self.max_age = max_age  # seconds or None
        self.min_count = min_count
        self.pattern = pattern

    def describe(self):
        """The policy in its own vocabulary, for messages and diffs."""
        parts = ["%s %d" % (rule, self.keep[rule]) for rule in KEEP_RULES if rule in self.keep]
        if self.keep_within is not None:
            parts.append("keep_within %s" % format_duration(self.keep_within))
        if self.max_age is not None:
            parts.append("max_age %s" % format_duration(self.max_age))
        parts.append("min_count %d" % self.min_count)
        if self.pattern:
            parts.append("pattern %s" % self.pattern)
        return ", ".join(parts)


def _keep_counts(raw, option):
    keep = {}
    for rule in KEEP_RULES:
        value = raw.get(rule)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise PolicyError(
                "%s.%s" % (option, rule),
                "%s.%s must be a whole number of at least 1 (got %r); leave it out to not use the rule" % (option, rule, value),
            )
        keep[rule] = value
    return keep


def _duration(raw, key, option):
    value = raw.get(key)
    if value is None or value == "":
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise PolicyError("%s.%s" % (option, key), "%s.%s: %s" % (option, key, exc)) from None
    if seconds <= 0:
        raise PolicyError("%s.%s" % (option, key), "%s.%s must be longer than 0" % (option, key))
    return seconds


def _min_count(raw, option):
    min_count = raw.get("min_count")
    min_count = 1 if min_count is None else min_count
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
        raise PolicyError(
            "%s.min_count" % option,
            "%s.min_count must be at least 1: the newest successful item is never removed (got %r)" % (option, min_count),
        )
    return min_count


def parse_policy(raw, option="retention"):
    """A Policy from the option's dict; raises PolicyError naming ``option.key`` and the fix."""
    raw = dict(raw or {})
    keep = _keep_counts(raw, option)
    keep_within = _duration(raw, "keep_within", option)
    max_age = _duration(raw, "max_age", option)
    min_count = _min_count(raw, option)
    if not keep and keep_within is None and max_age is None:
        raise PolicyError(
            option,
            "%s says nothing to remove: give at least one of %s, keep_within or max_age" % (option, ", ".join(KEEP_RULES)),
        )
    return Policy(keep, keep_within, max_age, min_count, raw.get("pattern") or None)


def item_time(item):
    """Epoch seconds of an item (a number, or an ISO 8601 UTC string such as 2026-11-22T02:00:00Z)."""
    value = item.get("time")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value:
        text = value.strip().replace(" ", "T")
        for fmt, length in (("%Y-%m-%dT%H:%M:%S", 19), ("%Y%m%dT%H%M%S", 15)):
            try:
                return float(calendar.timegm(time.strptime(text[:length], fmt)))
            except ValueError:
                continue
    raise ValueError("item %r has no readable time (%r)" % (item.get("name"), value))


def _bucket(rule, moment):
    tm = time.gmtime(moment)
    if rule == "keep_hourly":
        return (tm.tm_year, tm.tm_mon, tm.tm_mday, tm.tm_hour)
    if rule == "keep_daily":
        return (tm.tm_year, tm.tm_mon, tm.tm_mday)
    if rule == "keep_weekly":
        return time.strftime("%G-%V", tm)
    if rule == "keep_monthly":
        return (tm.tm_year, tm.tm_mon)
    if rule == "keep_yearly":
        return tm.tm_year
    return None  # keep_last: every item is its own bucket


def _select(successes, policy):
    """restic's bucket walk over one series' successful items, newest first:
    name -> the rules that keep it."""
    chosen = {}
    for rule, count in policy.keep.items():
        last = object()
        left = count
        for entry in successes:
            if left <= 0:
                break
            bucket = _bucket(rule, entry.time) if rule != "keep_last" else entry.name
            if bucket != last:
                chosen.setdefault(entry.name, []).append(rule)
                last = bucket
                left -= 1
    return chosen


class Decision:
    """What retention does with one item, and why."""

    __slots__ = ("item", "name", "time", "verdict", "series", "group", "pinned", "action", "rule")

    def __init__(self, item, moment):
        self.item = item
        self.name = item.get("name")
        self.time = moment
        self.verdict = item.get("verdict")
        self.series = item.get("series")
        self.group = item.get("group")
        self.pinned = bool(item.get("pinned"))
        self.action = None
        self.rule = None

    @property
    def keep(self):
        return self.action == "keep"

    def decide(self, action, rule):
        self.action = action
        self.rule = rule

    def as_dict(self):
        return {
            "name": self.name,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.time)),
            "verdict": self.verdict,
            "series": self.series,
            "group": self.group,
            "pinned": self.pinned,
            "action": self.action,
            "rule": self.rule,
        }


def _decide_unsuccessful(entry, newer_success, too_old, age, policy):
    """A judged item that did not succeed (partial, failed)."""
    if newer_success is not None:
        entry.decide("remove", "%s, superseded by the newer successful %s" % (entry.verdict, newer_success))
    elif too_old:
        entry.decide("remove", "%s, older than max_age (%s > %s)" % (entry.verdict, format_duration(age), format_duration(policy.max_age)))
    else:
        entry.decide("keep", "%s, and no newer successful item exists yet" % entry.verdict)


def _decide_success(entry, chosen, age, policy, selecting):
    """A successful item that min_count and max_age leave to the keep rules."""
    rules = list(chosen.get(entry.name, []))
    if policy.keep_within is not None and age <= policy.keep_within:
        rules.append("keep_within")
    if rules:
        entry.decide("keep", ", ".join(_rule_label(rule, policy, entry.time) for rule in rules))
    elif not selecting:
        entry.decide("keep", "younger than max_age (%s <= %s)" % (format_duration(age), format_duration(policy.max_age)))
    else:
        entry.decide("remove", "not selected by %s" % selecting)


def _selecting(policy):
    """The keep rules in words ("keep_daily 7, keep_within 2d"); empty when there are none."""
    selecting = ", ".join("%s %d" % (rule, policy.keep[rule]) for rule in KEEP_RULES if rule in policy.keep)
    if policy.keep_within is not None:
        selecting = ", ".join(filter(None, [selecting, "keep_within %s" % format_duration(policy.keep_within)]))
    return selecting


def _decide_series(entries, policy, now):
    """Decide one series; ``entries`` newest first."""
    successes = [e for e in entries if e.verdict == "success"]
    chosen = _select(successes, policy)
    newest = {e.name for e in successes[: policy.min_count]}
    selecting = _selecting(policy)
    newer_success = None
    for entry in entries:
        age = now - entry.time
        too_old = policy.max_age is not None and age > policy.max_age
        if entry.pinned:
            entry.decide("keep", "pinned")
        elif entry.verdict not in JUDGED:
            entry.decide("keep", "verdict %s: retention never removes what it cannot judge" % (entry.verdict or "unknown"))
        elif entry.verdict != "success":
            _decide_unsuccessful(entry, newer_success, too_old, age, policy)
        elif entry.name in newest:
            entry.decide("keep", _min_count_rule(policy.min_count))
        elif too_old:
            entry.decide("remove", "older than max_age (%s > %s)" % (format_duration(age), format_duration(policy.max_age)))
        else:
            _decide_success(entry, chosen, age, policy, selecting)
        if entry.verdict == "success" and newer_success is None:
            newer_success = entry.name


def _min_count_rule(min_count):
    if min_count == 1:
        return "the newest successful item of its series (never removed)"
    return "one of the newest %d successful items of its series (min_count)" % min_count


def _rule_label(rule, policy, moment):
    if rule == "keep_last":
        return "keep_last %d" % policy.keep[rule]
    if rule == "keep_within":
        return "keep_within %s" % format_duration(policy.keep_within)
    stamp = {
        "keep_hourly": "%Y-%m-%dT%H",
        "keep_daily": "%Y-%m-%d",
        "keep_weekly": "%G-W%V",
        "keep_monthly": "%Y-%m",
        "keep_yearly": "%Y",
    }[rule]
    return "%s %d (%s)" % (rule, policy.keep[rule], time.strftime(stamp, time.gmtime(moment)))


def kept_because(name, rule, where=None):
    """Why a run is kept, for the other items of its group: "<name> [in <where>] is kept (<rule>)"."""
    return "%s%s is kept (%s)" % (name, " in %s" % where if where else "", rule)


def _keep_groups_together(decisions, kept_runs):
    """Keep every item of a group (a cluster run) that one item of it keeps, here or in
    ``kept_runs`` (group -> why it is kept elsewhere)."""
    why_kept = {}
    for entry in decisions:
        if entry.group and entry.keep and entry.group not in why_kept:
            why_kept[entry.group] = kept_because(entry.name, entry.rule)
    for group, why in kept_runs.items():
        why_kept.setdefault(group, why)
    for entry in decisions:
        if entry.action == "remove" and entry.group in why_kept:
            entry.decide("keep", "kept with its cluster run %s: %s" % (entry.group, why_kept[entry.group]))


def plan(items, policy, now, together=False, kept_runs=None):
    """Decide every item. Returns a list of Decision, newest first (of two items
    with the same time, the greater name counts as the newer).

    With ``together``, an item that the policy removes is kept while another item of its
    group is kept, here or in ``kept_runs`` (group -> why, from other locations' plans).

    ``policy`` is a Policy (or the option's dict, checked here); ``now`` epoch seconds.
    Items whose name does not match the policy's pattern are returned with action
    ``ignored``. Raises ValueError for an item without a readable time or a repeated name.
    """
    if not isinstance(policy, Policy):
        policy = parse_policy(policy)
    decisions = []
    seen = set()
    for item in items:
        name = item.get("name")
        if name in seen:
            raise ValueError("item %r is listed twice" % (name,))
        seen.add(name)
        decisions.append(Decision(item, item_time(item)))
    decisions.sort(key=lambda d: (d.time, str(d.name)), reverse=True)
    series = {}
    for entry in decisions:
        if policy.pattern and not fnmatch.fnmatchcase(str(entry.name), policy.pattern):
            entry.decide("ignored", "name does not match pattern %s" % policy.pattern)
            continue
        series.setdefault(entry.series, []).append(entry)
    for entries in series.values():
        _decide_series(entries, policy, now)
    if together:
        _keep_groups_together(decisions, kept_runs or {})
    return decisions


def split(decisions):
    """(kept, removed) names, newest first."""
    return [d.name for d in decisions if d.action == "keep"], [d.name for d in decisions if d.action == "remove"]


def diff(decisions, label="retention"):
    """An Ansible diff: the items before and after; a removed line carries the rule that removes it."""
    considered = [d for d in decisions if d.action in ("keep", "remove")]

    def line(d):
        text = "%s  %s  %s" % (d.as_dict()["time"], d.name, d.verdict)
        return text + ("  # removed: %s\n" % d.rule if d.action == "remove" else "\n")

    return {
        "before": "".join(line(d) for d in considered),
        "after": "".join(line(d) for d in considered if d.keep),
        "before_header": "%s (before)" % label,
        "after_header": "%s (after)" % label,
    }
