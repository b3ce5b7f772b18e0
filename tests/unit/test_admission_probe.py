"""kernel/admission.py's probed baseline: the no-load latency is measured at `min_limit` permits
every `probe_every` windows, so on a CPU-bound stack (latency growing with the work admitted)
the limit settles a little above the cores instead of ratcheting up to its ceiling. Latencies are
fed as numbers from a model of the machine: no timing is asserted."""

from __future__ import annotations

from kernel.admission import GradientLimit


def cpu_bound(lim: GradientLimit, service_s: float, cores: int, windows: int) -> list[float]:
    """`windows` windows of a closed loop that always fills the limit; each sample's latency is
    the service time times the work sharing the cores. Returns the limit after each window."""
    seen = []
    for _ in range(windows):
        start = lim.windows
        while lim.windows == start:
            inflight = lim.current
            lim.sample(service_s * max(1.0, inflight / cores), inflight)
        seen.append(lim.limit)
    return seen


def test_the_limit_settles_near_the_cores_instead_of_ratcheting_to_the_ceiling() -> None:
    probed = GradientLimit(limit=8, min_limit=2, ceiling=256, probe_every=20)
    drifting = GradientLimit(limit=8, min_limit=2, ceiling=256)  # no probe: the baseline drifts up
    cpu_bound(probed, 0.02, cores=2, windows=600)
    cpu_bound(drifting, 0.02, cores=2, windows=600)
    assert probed.probes >= 20
    assert probed.limit < 16  # admitted work a few times the cores: latency a few times the no-load one
    assert drifting.limit > 2 * probed.limit  # what the probe prevents


def test_a_probe_admits_min_limit_and_resets_the_baseline_to_what_it_measured() -> None:
    lim = GradientLimit(limit=16, min_limit=2, ceiling=64, probe_every=3)
    cpu_bound(lim, 0.01, cores=2, windows=3)
    assert lim.probing and lim.current == 2
    lim.sample(5.0, inflight=10)  # a permit taken before the probe: not a no-load sample
    assert lim._n == 0
    for _ in range(8):
        lim.sample(0.04, inflight=2)  # the machine got slower since the last baseline
    assert not lim.probing and lim.baseline == 0.04 and lim.probes == 1
    assert lim.current == int(lim.limit) > 2


def test_a_quieter_machine_lowers_the_baseline_at_once() -> None:
    lim = GradientLimit(limit=8, min_limit=2, ceiling=64, probe_every=50)
    cpu_bound(lim, 0.05, cores=2, windows=5)
    high = lim.baseline
    cpu_bound(lim, 0.01, cores=2, windows=1)
    assert lim.baseline is not None and high is not None and lim.baseline < high


def test_a_stack_whose_demand_stays_below_the_limit_is_never_probed() -> None:
    lim = GradientLimit(limit=16, min_limit=2, ceiling=64, probe_every=3)
    for _ in range(200):
        lim.sample(0.01, inflight=5)  # a few users: the limit never binds
    assert lim.windows > 10 and lim.probes == 0 and not lim.probing
