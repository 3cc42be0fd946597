"""How much of the machine's CPU time the hypervisor gave to others (steal time).

This machine is a VM on a shared host, and the host sometimes takes its CPUs away. The guest
sees a stolen moment as time its thread ran, so no profiler of this process shows it; Linux
counts it in /proc/stat, in ticks of 10 ms. In six rounds of 1,000 SQLite bookings on the
same code (5 December), the two with 0-8 ticks of steal had event-loop stalls of 2-4 ms and
booked 515-557 sessions/s; the four with 80-116 ticks had stalls of 9-39 ms and booked
313-384/s (docs/performance-history.md). Steal is not the only cause of a slow hour or a
long stall (others showed with none), so the bench prints it beside its figures, as a
fact about the machine meanwhile, and changes nothing by it.
"""

from __future__ import annotations

from pathlib import Path

_STAT = Path("/proc/stat")


def cpu_ticks() -> tuple[int, int] | None:
    """(stolen, all) CPU ticks since boot, summed over the CPUs; None where /proc/stat is
    not Linux's."""
    try:
        fields = _STAT.read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if len(fields) < 9 or fields[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice: within user]
    ticks = [int(value) for value in fields[1:9]]
    return ticks[7], sum(ticks)


def stolen(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """The share of the machine's CPU time the hypervisor took between the two readings."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def percent(share: float | None) -> str:
    return "unknown" if share is None else f"{share * 100:.1f} %"
