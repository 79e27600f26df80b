"""The bench's scenarios, one module each; every one measures sentinelflow and the raw-RQ reference (8 the
durable peers too)."""

from __future__ import annotations

from bench.scenarios.batch import scenario_3_batch
from bench.scenarios.drain import scenario_1_drain
from bench.scenarios.io import scenario_5_io
from bench.scenarios.latency import scenario_4_latency
from bench.scenarios.memory import scenario_7_memory
from bench.scenarios.peers import scenario_8_peers
from bench.scenarios.scale import scenario_6_scale
from bench.scenarios.submit import scenario_2_submit

SCENARIOS = {
    "1": scenario_1_drain,
    "2": scenario_2_submit,
    "3": scenario_3_batch,
    "4": scenario_4_latency,
    "5": scenario_5_io,
    "6": scenario_6_scale,
    "7": scenario_7_memory,
    "8": scenario_8_peers,
}

# --only accepts these names for scenario numbers.
ALIASES = {"peers": "8"}
