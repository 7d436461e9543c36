"""What bench/network.py prints: per-profile tables, the goals, the JSON.

Figures are MB/s (10**6 bytes per second) by each tool's own clock, the
median of the runs (a run stopped at the cap counts with the bytes it had
moved by then, and "done" shows how many runs finished). Ratios compare
medians from the same profile of the same run of the bench. The goals are
the issue's, checked against the default p2pcp variant.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from network_tools import DEFAULT_VARIANT, FLOOR_VARIANT, TCP_TOOL, ToolSummary

from tests.support.netlab.link import LinkShape

MIB = 1024 * 1024
# Busier than this (all cores, before a profile starts) and the machine is
# running someone else's work: the figures will be low, and the table says so.
BUSY_WARNING_PERCENT = 15.0
# The issue's speed goals: the LAN's goodput, and each lossy profile's share
# of its link rate.
LAN_GOAL_MB_PER_S = 110.0
LINK_SHARE_GOAL = 0.9


@dataclass(frozen=True)
class Profile:
    name: str
    title: str
    emulates: str
    shape: LinkShape
    default_size: int

    def describe(self) -> str:
        shape = self.shape
        loss = f"{shape.loss_percent:g}% loss" if shape.loss_percent else "no loss"
        jitter = f", +-{shape.jitter_ms:g} ms jitter in order" if shape.jitter_ms else ""
        return (
            f"{self.title}: {shape.rate_mbit:g} Mbit/s, RTT {shape.rtt_ms:g} ms, {loss}{jitter} "
            f"({self.emulates})"
        )


@dataclass
class ProfileResult:
    profile: Profile
    size: int
    cap_s: float
    tools: dict[str, ToolSummary] = field(default_factory=dict)
    ping_ms: list[float] = field(default_factory=list)
    pings_sent: int = 0
    busy_before_percent: float = 0.0
    line_stats: dict[str, Any] = field(default_factory=dict)
    loss: dict[str, tuple[int, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    host_drops: dict[str, int] = field(default_factory=dict)

    def speed(self, tool: str) -> float | None:
        summary = self.tools.get(tool)
        return summary.median_mb_per_s if summary else None

    @property
    def link_mb_per_s(self) -> float:
        return self.profile.shape.rate_bytes_per_s / 1e6


# -- output ----------------------------------------------------------------


def _ratio(value: float | None, base: float | None) -> float | None:
    return value / base if value is not None and base else None


def _fmt(value: float | None, pattern: str, missing: str = "-") -> str:
    return pattern.format(value) if value is not None else missing


def _ends_cpu(summary: ToolSummary) -> str:
    """Median CPU of the sender / the receiver process, % of one core (p2pcp)."""
    senders = [r.sender_cpu_percent for r in summary.runs if r.sender_cpu_percent is not None]
    receivers = [r.receiver_cpu_percent for r in summary.runs if r.receiver_cpu_percent is not None]
    if not senders or not receivers:
        return "-"
    return f"{statistics.median(senders):.0f}/{statistics.median(receivers):.0f}%"


def _line_faults(line: dict[str, Any]) -> str:
    """Drops that are the emulator's fault, not the link's (normally none)."""
    faults = {"ring full": line["dropped_full"], "write failed": line["dropped_write"]}
    shown = [f"{name} {count:,}" for name, count in faults.items() if count]
    return f"; LAB DROPS: {', '.join(shown)}" if shown else ""


def print_profile(result: ProfileResult, floor_ms: float | None) -> None:
    profile = result.profile
    print(f"\n== {profile.describe()} ==")
    print(
        f"   file {result.size / MIB:,.0f} MiB, cap {result.cap_s:.0f} s per run, "
        f"link {result.link_mb_per_s:.2f} MB/s, bottleneck queue "
        f"{profile.shape.queue_bytes / 1024:,.0f} KiB"
    )
    if result.busy_before_percent > BUSY_WARNING_PERCENT:
        print(
            f"   warning: the machine was {result.busy_before_percent:.0f}% busy just before "
            "this profile (work outside the bench): figures may be low"
        )
    if result.ping_ms:
        pings = sorted(result.ping_ms)
        floor = f"; floor with a zero-delay line {floor_ms:.2f} ms" if floor_ms else ""
        print(
            f"   link check (idle, UDP ping a->b->a): RTT min {pings[0]:.2f} / median "
            f"{statistics.median(pings):.2f} / max {pings[-1]:.2f} ms, "
            f"{len(pings)}/{result.pings_sent} answered{floor}"
        )
    for key, direction in (("left_to_right", "a->b"), ("right_to_left", "b->a")):
        line = result.line_stats.get(key)
        if line:
            print(
                f"   delay line {direction}: {line['frames_out']:,} frames, largest "
                f"{line['max_frame']} B, oversize {line['oversize']}, queue drops "
                f"{line['dropped_queue']:,}; late by mean {line['late_ms_mean'] * 1000:.0f} us, "
                f"max {line['late_ms_max']:.2f} ms, {line['late_over_1ms']:,} frames > 1 ms"
                + _line_faults(line)
            )
    if result.host_drops:
        drops = result.host_drops
        print(
            f"   drops outside the link: eth0 queue a {drops['a_tx']:,}, b {drops['b_tx']:,}; "
            f"UDP receive buffers a {drops['a_udp_rcvbuf']:,}, b {drops['b_udp_rcvbuf']:,}"
        )
    if result.loss:
        parts = [
            f"{direction.replace('_to_', '->')} {100 * dropped / seen:.2f}% of {seen:,} frames"
            for direction, (seen, dropped) in result.loss.items()
            if seen
        ]
        print(f"   random loss applied: {', '.join(parts)}")
    for note in result.notes:
        print(f"   note: {note}")
    tcp = result.speed(TCP_TOOL)
    floor_speed = result.speed(FLOOR_VARIANT)
    print(
        f"   {'tool':<20} {'MB/s':>7} {'% link':>7} {'x TCP':>6} {'x floor':>7} "
        f"{'wall':>7} {'done':>5} {'line CPU':>9} {'ends CPU':>9}  runs (MB/s) / notes"
    )
    for tool, summary in result.tools.items():
        if summary.skipped:
            print(f"   {tool:<20} {'-':>7}  {summary.skipped}")
            continue
        speed = summary.median_mb_per_s
        walls = [w for w in (r.wall_mb_per_s for r in summary.runs) if w is not None]
        runs = " ".join(_fmt(r.mb_per_s, "{:.1f}", "x") for r in summary.runs)
        notes = sorted({r.note for r in summary.runs if r.note})
        cpu = statistics.median([r.line_cpu_percent for r in summary.runs])
        ends = _ends_cpu(summary)
        print(
            f"   {tool:<20} {_fmt(speed, '{:7.1f}', '      -')} "
            f"{_fmt(_ratio(speed, result.link_mb_per_s), '{:7.0%}', '      -')} "
            f"{_fmt(_ratio(speed, tcp), '{:5.2f}x', '     -')} "
            f"{_fmt(_ratio(speed, floor_speed), '{:6.2f}x', '      -')} "
            f"{_fmt(statistics.median(walls) if walls else None, '{:7.1f}', '      -')} "
            f"{summary.finished_count:>3}/{len(summary.runs):<1} {cpu:8.0f}% {ends:>9}  "
            f"{runs}{' / ' + '; '.join(notes) if notes else ''}"
        )


@dataclass
class Goal:
    text: str
    figure: str
    target: str
    met: bool | None  # None: not measured


def _at_least(
    text: str, value: float | None, pattern: str, bound: float, target: str, suffix: str = ""
) -> Goal:
    """The goal "value >= bound", value shown with pattern (or "not measured")."""
    met = None if value is None else value >= bound
    return Goal(text, _fmt(value, pattern, "not measured") + suffix, target, met)


# The goal lines show one digit more than the table: a figure a hair under
# its target must not read as the target itself.
def goals(results: list[ProfileResult]) -> list[Goal]:
    found: list[Goal] = []
    for result in results:
        name = result.profile.title
        speed = result.speed(DEFAULT_VARIANT)
        summary = result.tools.get(DEFAULT_VARIANT)
        unfinished = (
            " (not all runs finished)"
            if summary and summary.runs and summary.finished_count < len(summary.runs)
            else ""
        )
        if result.profile.shape.loss_percent > 0:
            share = _ratio(speed, result.link_mb_per_s)
            found.append(
                _at_least(
                    f"{name}: p2pcp / link rate",
                    share,
                    "{:.1%}",
                    LINK_SHARE_GOAL,
                    f">= {LINK_SHARE_GOAL:.0%}",
                    unfinished,
                )
            )
            versus_tcp = _ratio(speed, result.speed(TCP_TOOL))
            found.append(_at_least(f"{name}: p2pcp / TCP", versus_tcp, "{:.3f}x", 1.0, ">= 1.0x"))
        if result.profile.name == "lan":
            found.append(
                _at_least(
                    "LAN: p2pcp",
                    speed,
                    "{:.1f} MB/s",
                    LAN_GOAL_MB_PER_S,
                    f">= {LAN_GOAL_MB_PER_S:.0f} MB/s",
                    unfinished,
                )
            )
        versus_floor = _ratio(speed, result.speed(FLOOR_VARIANT))
        found.append(
            _at_least(
                f"{name}: p2pcp / aioquic reno @1452", versus_floor, "{:.3f}x", 1.0, ">= 1.0x"
            )
        )
    return found


@dataclass
class CpuBudget:
    """What a speed goal p2pcp missed would cost in CPU on this machine.

    The cores p2pcp's two ends and the delay line would use together at the
    goal's speed, if each kept the CPU per byte it had in this profile's
    runs (median). More than the machine has: CPU-bound on this machine,
    the link could not be filled here whatever the protocol did. Fewer:
    the CPU was not what held it back.
    """

    profile: str
    target_mb_per_s: float
    ends_cores: float
    line_cores: float
    cpus: int

    @property
    def cores(self) -> float:
        return self.ends_cores + self.line_cores


def cpu_budgets(results: list[ProfileResult], cpus: int) -> list[CpuBudget]:
    """One CpuBudget per profile whose speed goal the default variant missed."""
    found: list[CpuBudget] = []
    for result in results:
        shape = result.profile.shape
        if result.profile.name == "lan":
            target = LAN_GOAL_MB_PER_S
        elif shape.loss_percent > 0:
            target = LINK_SHARE_GOAL * result.link_mb_per_s
        else:
            continue
        speed = result.speed(DEFAULT_VARIANT)
        summary = result.tools.get(DEFAULT_VARIANT)
        if speed is None or speed >= target or summary is None:
            continue
        runs = [r for r in summary.runs if r.ends_cpu_s is not None and r.bytes_moved > 0]
        if not runs:
            continue
        ends = statistics.median((r.ends_cpu_s or 0.0) / r.bytes_moved for r in runs)
        line = statistics.median(r.line_cpu_s / r.bytes_moved for r in runs)
        rate = target * 1e6
        found.append(CpuBudget(result.profile.title, target, ends * rate, line * rate, cpus))
    return found


def print_cpu_budgets(found: list[CpuBudget]) -> None:
    if not found:
        return
    print(
        "\nCPU at a missed goal's speed (this profile's CPU per byte, median; the ends are "
        "p2pcp's sender and receiver together)"
    )
    for budget in found:
        verdict = "more than" if budget.cores > budget.cpus else "within"
        print(
            f"   {budget.profile}: {budget.target_mb_per_s:.1f} MB/s needs "
            f"{budget.cores:.2f} cores (ends {budget.ends_cores:.2f} + delay line "
            f"{budget.line_cores:.2f}), {verdict} the machine's {budget.cpus}"
        )


LEGEND = """
MB/s: 10**6 bytes/s by the tool's own clock (p2pcp: the receiver's "done"
seconds, bind to fsynced; tcp: connect to EOF; magic-wormhole: its "rx file"
span, no handshakes, no fsync); % link: of the profile's rate; x TCP, x floor:
against tcp and against "aioquic reno @1452" in the same profile; wall: MB/s
over the whole receive command; done: runs finished within the cap; line CPU:
the delay line process in % of one core (it includes the kernel's delivery
of every frame to the receiving end); ends CPU: p2pcp's sender / receiver
process in % of one core."""


def print_goals(found: list[Goal]) -> None:
    print(LEGEND)
    print("\ngoals of the issue (p2pcp = the default variant, median MB/s)")
    for goal in found:
        verdict = {True: "met", False: "NOT MET", None: "not measured"}[goal.met]
        print(f"   {goal.text:<42} {goal.figure:<30} {goal.target:<12} {verdict}")


def to_json(
    results: list[ProfileResult],
    found: list[Goal],
    context: dict[str, Any],
    budgets: list[CpuBudget] | None = None,
) -> dict[str, Any]:
    profiles = []
    for result in results:
        tools = {}
        for tool, summary in result.tools.items():
            speed = summary.median_mb_per_s
            tools[tool] = {
                "skipped": summary.skipped or None,
                "median_mb_per_s": speed,
                "share_of_link": _ratio(speed, result.link_mb_per_s),
                "versus_tcp": _ratio(speed, result.speed(TCP_TOOL)),
                "versus_reno_1452": _ratio(speed, result.speed(FLOOR_VARIANT)),
                "finished": summary.finished_count,
                "runs": [
                    {**asdict(run), "mb_per_s": run.mb_per_s, "wall_mb_per_s": run.wall_mb_per_s}
                    for run in summary.runs
                ],
            }
        profiles.append(
            {
                "name": result.profile.name,
                "title": result.profile.title,
                "shape": {
                    **asdict(result.profile.shape),
                    "queue_bytes": result.profile.shape.queue_bytes,
                },
                "link_mb_per_s": result.link_mb_per_s,
                "size_bytes": result.size,
                "cap_s": result.cap_s,
                "ping_ms": result.ping_ms,
                "pings_sent": result.pings_sent,
                "busy_before_percent": result.busy_before_percent,
                "delay_line": result.line_stats,
                "loss_frames_seen_dropped": result.loss,
                "notes": result.notes,
                "host_drops": result.host_drops,
                "tools": tools,
            }
        )
    return {
        **context,
        "profiles": profiles,
        "goals": [asdict(goal) for goal in found],
        "cpu_budgets": [{**asdict(budget), "cores": budget.cores} for budget in budgets or []],
    }
