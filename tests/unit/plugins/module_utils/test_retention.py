"""Retention policy: worked examples of each rule, the guards, and property tests over random
histories (the newest success of each series and pinned items always kept, every item decided
exactly once, the policy's own promises held)."""

from __future__ import annotations

import calendar
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.lifeboat.backup.plugins.module_utils import _retention as r

HOUR = 3600
DAY = 86400
NOW = calendar.timegm((2026, 11, 29, 12, 0, 0))


def item(name, age, verdict="success", **extra):
    return dict(name=name, time=NOW - age, verdict=verdict, **extra)


def decided(decisions, action):
    return [d.name for d in decisions if d.action == action]


def run(items, together=False, **policy):
    return r.plan(items, r.parse_policy(policy), NOW, together=together)


# ---- policy parsing ----------------------------------------------------------------------


def test_a_policy_that_removes_nothing_is_refused_naming_the_keys():
    with pytest.raises(r.PolicyError) as err:
        r.parse_policy({"min_count": 3})
    assert "keep_last" in err.value.msg and "max_age" in err.value.msg and err.value.option == "retention"


@pytest.mark.parametrize(
    "policy, option",
    [
        ({"keep_last": 0}, "retention.keep_last"),
        ({"keep_daily": -1}, "retention.keep_daily"),
        ({"keep_weekly": True}, "retention.keep_weekly"),
        ({"max_age": "soon"}, "retention.max_age"),
        ({"keep_within": "0d"}, "retention.keep_within"),
        ({"keep_last": 2, "min_count": 0}, "retention.min_count"),
    ],
)
def test_bad_values_name_the_option(policy, option):
    with pytest.raises(r.PolicyError) as err:
        r.parse_policy(policy)
    assert err.value.option == option and option in err.value.msg


def test_option_prefix_follows_the_caller():
    with pytest.raises(r.PolicyError) as err:
        r.parse_policy({"keep_last": 0}, option="backup_retention")
    assert err.value.msg.startswith("backup_retention.keep_last")


def test_durations():
    assert r.parse_duration("30d") == 30 * DAY
    assert r.parse_duration("2w") == 14 * DAY
    assert r.parse_duration("1y") == 365 * DAY
    assert r.parse_duration(90) == 90
    assert r.format_duration(3 * DAY + 4 * HOUR + 5) == "3d 4h"
    assert r.format_duration(40) == "40s"
    with pytest.raises(ValueError):
        r.parse_duration("5 parsecs")


def test_describe_uses_the_vocabulary():
    policy = r.parse_policy({"keep_daily": 7, "keep_monthly": 12, "max_age": "400d", "min_count": 2})
    assert policy.describe() == "keep_daily 7, keep_monthly 12, max_age 400d, min_count 2"


# ---- the rules ---------------------------------------------------------------------------


def test_keep_last_keeps_the_newest_successful_ones():
    items = [item("s%d" % i, (10 - i) * HOUR) for i in range(6)]
    decisions = run(items, keep_last=3)
    assert decided(decisions, "keep") == ["s5", "s4", "s3"]
    assert decided(decisions, "remove") == ["s2", "s1", "s0"]
    assert {d.rule for d in decisions if d.action == "remove"} == {"not selected by keep_last 3"}


def test_keep_daily_keeps_the_newest_of_each_day():
    # Two runs a day for five days, newest day first.
    items = [item("d%d-%s" % (day, half), day * DAY + offset) for day in range(5) for half, offset in (("pm", 0), ("am", 6 * HOUR))]
    decisions = run(items, keep_daily=3)
    assert decided(decisions, "keep") == ["d0-pm", "d1-pm", "d2-pm"]
    kept = {d.name: d.rule for d in decisions if d.keep}
    assert kept["d1-pm"] == "keep_daily 3 (2026-11-28)"
    assert "d0-pm" in kept  # also the newest success, which wins the label
    assert len(decided(decisions, "remove")) == 7


def test_weekly_monthly_yearly_buckets():
    # One success a day over 800 days.
    items = [item("day%03d" % n, n * DAY) for n in range(800)]
    decisions = run(items, keep_weekly=4, keep_monthly=3, keep_yearly=3)
    kept = decided(decisions, "keep")
    # 4 weeks + 3 months + 3 years, some of them the same item (the newest one is all of them).
    months = {time.strftime("%Y-%m", time.gmtime(NOW - int(n[3:]) * DAY)) for n in kept}
    assert {"2026-11", "2026-10", "2026-09"} <= months
    years = {time.strftime("%Y", time.gmtime(NOW - int(n[3:]) * DAY)) for n in kept}
    assert years == {"2026", "2025", "2024"}
    assert 6 <= len(kept) <= 10
    # The newest item of each month is what keep_monthly keeps.
    october = [n for n in kept if time.strftime("%Y-%m", time.gmtime(NOW - int(n[3:]) * DAY)) == "2026-10"]
    assert october == ["day%03d" % 29]  # 2026-10-31 is 29 days before 2026-11-29


def test_max_age_alone_keeps_what_is_younger_and_is_a_ceiling_for_the_rules():
    items = [item("s%d" % n, n * DAY) for n in range(10)]
    decisions = run(items, max_age="5d")
    assert decided(decisions, "keep") == ["s0", "s1", "s2", "s3", "s4", "s5"]
    decisions = run(items, keep_last=8, max_age="5d")
    assert decided(decisions, "keep") == ["s0", "s1", "s2", "s3", "s4", "s5"]
    assert [d.rule for d in decisions if d.name == "s7"] == ["older than max_age (7d > 5d)"]


def test_keep_within_adds_to_the_buckets():
    items = [item("s%d" % n, n * HOUR * 10) for n in range(10)]
    decisions = run(items, keep_last=1, keep_within="1d")
    assert decided(decisions, "keep") == ["s0", "s1", "s2"]
    assert [d.rule for d in decisions if d.name == "s2"] == ["keep_within 1d"]


def test_the_newest_success_survives_newer_failures_and_any_age():
    items = [item("old", 100 * DAY), item("good", 50 * DAY), item("bad1", 2 * DAY, "failed"), item("bad2", 12 * HOUR, "partial")]
    decisions = run(items, max_age="1d")
    assert decided(decisions, "keep") == ["bad2", "good"]
    assert decided(decisions, "remove") == ["bad1", "old"]
    assert [d.rule for d in decisions if d.name == "good"] == ["the newest successful item of its series (never removed)"]
    decisions = run(items, keep_last=1, min_count=2)
    assert decided(decisions, "keep") == ["bad2", "bad1", "good", "old"]


def test_partial_and_failed_are_counted_apart_and_superseded():
    items = [item("p-new", 1 * HOUR, "partial"), item("s1", 2 * HOUR), item("p-old", 3 * HOUR, "partial"), item("s2", 4 * HOUR), item("f", 5 * HOUR, "failed")]
    decisions = run(items, keep_last=2)
    # keep_last 2 keeps two successes: the partials fill no slot.
    assert decided(decisions, "keep") == ["p-new", "s1", "s2"]
    assert [d.rule for d in decisions if d.name == "p-old"] == ["partial, superseded by the newer successful s1"]
    assert [d.rule for d in decisions if d.name == "p-new"] == ["partial, and no newer successful item exists yet"]


def test_unknown_verdicts_and_pinned_items_are_never_removed():
    items = [item("s0", 0), item("broken", DAY, None), item("running", 2 * DAY, "running"), item("pin", 900 * DAY, pinned=True), item("s9", 9 * DAY)]
    decisions = run(items, keep_last=1, max_age="3d")
    assert decided(decisions, "keep") == ["s0", "broken", "running", "pin"]
    assert decided(decisions, "remove") == ["s9"]
    assert [d.rule for d in decisions if d.name == "pin"] == ["pinned"]


def test_series_are_decided_apart():
    items = [item("a%d" % n, n * DAY, series="a") for n in range(3)] + [item("b%d" % n, (n + 10) * DAY, series="b") for n in range(3)]
    decisions = run(items, max_age="5d")
    # b's newest is older than max_age but is b's newest success: kept.
    assert decided(decisions, "keep") == ["a0", "a1", "a2", "b0"]


def test_cluster_runs_kept_together_when_asked():
    items = [
        item("db-run2", 1 * HOUR, series="db", group="run2"),
        item("app-run2", 1 * HOUR, "partial", series="app", group="run2"),
        item("db-run1", 2 * HOUR, series="db", group="run1"),
        item("app-run1", 2 * HOUR, series="app", group="run1"),
    ]
    apart = run(items, keep_last=1)
    assert decided(apart, "remove") == ["db-run1"]  # app-run1 is app's newest success
    together = run(items, keep_last=1, together=True)
    assert decided(together, "remove") == []
    assert [d.rule for d in together if d.name == "db-run1"] == [
        "kept with its cluster run run1: app-run1 is kept (the newest successful item of its series (never removed))"
    ]


def test_a_run_kept_in_another_location_is_kept_here():
    # db's own destination: keep_last 1 would remove run1, but app's plan (another node) keeps it.
    items = [item("db-run2", 1 * HOUR, series="db", group="run2"), item("db-run1", 2 * HOUR, series="db", group="run1")]
    assert decided(run(items, keep_last=1, together=True), "remove") == ["db-run1"]
    decisions = r.plan(items, r.parse_policy({"keep_last": 1}), NOW, together=True, kept_runs={"run1": "app-run1 in destination is kept (pinned)"})
    assert decided(decisions, "remove") == []
    assert [d.rule for d in decisions if d.name == "db-run1"] == ["kept with its cluster run run1: app-run1 in destination is kept (pinned)"]


def test_pattern_leaves_other_items_alone():
    items = [item("nightly-1", DAY), item("nightly-2", 2 * DAY), item("manual-1", 3 * DAY)]
    decisions = run(items, keep_last=1, pattern="nightly-*")
    assert decided(decisions, "ignored") == ["manual-1"]
    assert decided(decisions, "remove") == ["nightly-2"]


def test_iso_times_and_bad_items():
    items = [{"name": "a", "time": "2026-11-29T10:00:00Z", "verdict": "success"}, {"name": "b", "time": "20261128T100000Z", "verdict": "success"}]
    decisions = run(items, keep_last=1)
    assert decided(decisions, "remove") == ["b"]
    with pytest.raises(ValueError, match="no readable time"):
        run([{"name": "x", "time": "yesterday", "verdict": "success"}], keep_last=1)
    with pytest.raises(ValueError, match="listed twice"):
        run([item("x", 0), item("x", 1)], keep_last=1)


def test_diff_shows_each_removal_with_its_rule():
    decisions = run([item("new", HOUR), item("old", 9 * DAY)], max_age="1d")
    change = r.diff(decisions, label="/var/backups/lifeboat")
    assert "old  success  # removed: older than max_age (9d > 1d)" in change["before"]
    assert "old" not in change["after"] and "new  success\n" in change["after"]


# ---- properties over random histories -------------------------------------------------

verdicts = st.sampled_from(["success", "success", "success", "partial", "failed", "running", None])
histories = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=800 * DAY),  # age
        verdicts,
        st.sampled_from([False, False, False, False, True]),  # pinned
        st.sampled_from(["db", "app", "search"]),
        st.integers(min_value=0, max_value=30),  # cluster run number
    ),
    max_size=60,
)
policies = st.fixed_dictionaries(
    {},
    optional={
        "keep_last": st.integers(1, 10),
        "keep_hourly": st.integers(1, 48),
        "keep_daily": st.integers(1, 14),
        "keep_weekly": st.integers(1, 8),
        "keep_monthly": st.integers(1, 24),
        "keep_yearly": st.integers(1, 5),
        "keep_within": st.sampled_from(["6h", "2d", "30d"]),
        "max_age": st.sampled_from(["1h", "3d", "90d", "2y"]),
        "min_count": st.integers(1, 4),
    },
).filter(lambda p: set(p) - {"min_count"})


def build(history):
    return [
        dict(name="i%03d-%s" % (n, series), time=NOW - age, verdict=verdict, pinned=pinned, series=series, group="run%d" % run_no)
        for n, (age, verdict, pinned, series, run_no) in enumerate(history)
    ]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories, policies, st.booleans())
def test_properties(history, raw_policy, together):
    items = build(history)
    policy = r.parse_policy(raw_policy)
    decisions = r.plan(items, policy, NOW, together=together)
    by_name = {d.name: d for d in decisions}
    # Every item is decided exactly once, with a rule.
    assert sorted(by_name) == sorted(i["name"] for i in items) and len(decisions) == len(items)
    assert all(d.action in ("keep", "remove") and d.rule for d in decisions)
    for series in ("db", "app", "search"):
        successes = sorted((d for d in decisions if d.series == series and d.verdict == "success"), key=lambda d: (d.time, d.name), reverse=True)
        # The newest min_count successes of each series are kept, whatever the policy.
        assert all(d.keep for d in successes[: policy.min_count])
    # Pinned items and items retention cannot judge are kept.
    assert all(d.keep for d in decisions if d.pinned or d.verdict not in r.JUDGED)
    # keep_last N alone keeps at most max(N, min_count) successes per series (without together).
    if not together and set(raw_policy) <= {"keep_last", "min_count"}:
        for series in ("db", "app", "search"):
            kept = [d for d in decisions if d.series == series and d.verdict == "success" and d.keep and not d.pinned]
            assert len(kept) <= max(raw_policy["keep_last"], policy.min_count)
    # max_age is a ceiling: an unpinned success older than it is kept only as one of the newest min_count
    # (or with its cluster run).
    if policy.max_age is not None:
        for d in decisions:
            if d.verdict == "success" and not d.pinned and NOW - d.time > policy.max_age and d.keep:
                assert d.rule.startswith(("the newest", "one of the newest", "kept with its cluster run"))
    # Kept together: no cluster run is left half-removed.
    if together:
        for group in {d.group for d in decisions}:
            actions = {d.action for d in decisions if d.group == group}
            assert actions != {"keep", "remove"}
    # A partial or failed item is removed only when a newer success exists in its series or it is past max_age.
    for d in decisions:
        if d.verdict in ("partial", "failed") and d.action == "remove":
            newer = [o for o in decisions if o.series == d.series and o.verdict == "success" and (o.time, o.name) > (d.time, d.name)]
            assert newer or (policy.max_age is not None and NOW - d.time > policy.max_age)


@settings(max_examples=100, deadline=None)
@given(histories, policies)
def test_removing_and_running_again_removes_nothing_more(history, raw_policy):
    """Idempotence: planning again on what a plan kept removes nothing more (a second run of
    image_retention deletes nothing)."""
    items = build(history)
    first = r.plan(items, raw_policy, NOW)
    kept = {d.name for d in first if d.keep}
    second = r.plan([i for i in items if i["name"] in kept], raw_policy, NOW)
    assert decided(second, "remove") == []
