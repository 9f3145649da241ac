"""The query's cost model and a per-step profile of its rounds and bytes.

Cost model (what ``benchmarks.e2e`` prints as ``predicted_query_s``)::

    query_s = compute_scale x compute_s + rounds x rtt / 2 + bytes / bandwidth

* ``compute_s``: the same query with three in-process parties (``servers.query.run_query``
  on the servers' stored shares), measured next to each gRPC query (so it tracks the load
  of the shared machine): local computation with free communication.
* ``compute_scale``: three server processes do not compute at the speed of three threads
  in one process (the GIL, process scheduling), and gRPC + TLS + proxy on loopback add a
  little per round. Fitted ONCE on the rtt-0 measurement (``fit_compute_scale``); 1.0 when
  not fitted. Every other RTT is then a prediction.
* ``rounds``: :meth:`protocols.comm.Comm.exchange` calls on the critical path. In a round
  every party sends to its neighbours and then waits for theirs, so a round costs ONE
  one-way delay, i.e. RTT / 2 (the WAN proxy delays every directed message by RTT / 2).
* ``bytes / bandwidth``: bytes sent by the busiest server (each server's egress is one
  token bucket of ``bandwidth``, shared by its two outgoing links).

:class:`RoundProfiler` attributes every ``exchange`` of a party to a protocol step by
looking at the (benchmark-side) call stack: CNN layers by type (``SecureModel._layer``),
the steps of ``secure_search`` (by the callee and the line it is called from) and the
result masking; within a step to an operation (comparison, bit injection, product, ...).
It wraps the party's ``Comm`` object in the benchmark only; production code is untouched.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

# secure_search's (and its _candidates') callees, by order of the line they are called from.
SEARCH_STEP_NAMES = {
    "centroid_distances": ["centroid distances"],
    "secure_distance": ["bucket distances"],
    "secure_topk": ["top-k"],  # the top-nprobe runs in _probe_onehot (see _step_of)
    "eq": ["one-hot of the probes"],
    "eqz": ["one-hot of the probes"],
    "oblivious_fetch": ["oblivious fetch"],
    "record_distances": ["centroid + record distances"],
    "fetch_distances": ["oblivious fetch (distance, id)"],
}
# The innermost of these on the stack names the operation of an exchange.
OPERATIONS = {
    "carry_out": "comparison", "msb": "comparison", "msb_bounded": "comparison", "a2b": "comparison",
    "_generate_propagate": "comparison", "_input_boolean_from_p0": "comparison", "eqz": "equality",
    "bit_inject": "bit injection", "bit_inject_chunked": "bit injection", "inject": "bit injection",
    "_digit_bits": "comparison", "_tree": "comparison",
    "mul_chunked": "product", "mul": "product", "_select": "product", "mux": "product", "square": "product",
    "matmul": "product", "bilinear": "product", "conv2d": "product", "oblivious_fetch": "product",
    "reshare_truncate": "product+truncate", "truncate_exact": "truncation", "truncate": "truncation",
    "rsqrt_parts": "rsqrt", "_octave_onehot": "rsqrt",
    "bit_mul": "bit x value (fused)", "mul_and_inject": "bit x value + injection (fused)",
    "late": "bit injection", "late_part": "bit injection",
}


@dataclass(frozen=True)
class CostModel:
    """``compute_scale x compute_s + rounds x rtt / 2 + bytes_max_party / bandwidth``."""

    compute_s: float
    rounds: int
    bytes_max_party: int
    compute_scale: float = 1.0

    def wire_s(self, bandwidth_mbps: float | None) -> float:
        """Seconds the busiest server spends sending its bytes at ``bandwidth_mbps`` (None: 0)."""
        if bandwidth_mbps is not None and bandwidth_mbps <= 0:
            raise ValueError("bandwidth must be > 0 (or None: unlimited)")
        return 0.0 if bandwidth_mbps is None else self.bytes_max_party * 8 / (bandwidth_mbps * 1e6)

    def predict(self, rtt_ms: float, bandwidth_mbps: float | None) -> float:
        """Predicted seconds per query at this round-trip time and per-server egress rate."""
        if rtt_ms < 0:
            raise ValueError("rtt must be >= 0")
        return self.compute_scale * self.compute_s + self.rounds * rtt_ms / 2000.0 + self.wire_s(bandwidth_mbps)

    def fit_compute_scale(self, measured_s: float, rtt_ms: float, bandwidth_mbps: float | None) -> float:
        """The ``compute_scale`` that makes this model predict ``measured_s`` exactly."""
        rest = self.rounds * rtt_ms / 2000.0 + self.wire_s(bandwidth_mbps)
        return max(0.0, measured_s - rest) / self.compute_s


def agreement(predicted_s: float, measured_s: float) -> float:
    """Relative error of a prediction: |predicted - measured| / measured."""
    return abs(predicted_s - measured_s) / measured_s


# ---- per-step profile -----------------------------------------------------------------


def _step_of(frames: list) -> tuple[tuple, int]:
    """(step key, index of the step's frame) for a stack listed outermost first."""
    step: tuple = ("other",)
    depth = 0
    for i, fr in enumerate(frames):
        name = fr.f_code.co_name
        if name == "secure_features":
            step, depth = ("cnn", "other"), i
        elif name == "_layer" and isinstance(fr.f_locals.get("s"), dict):
            t = fr.f_locals["s"].get("type", "?")
            if t != "residual":
                step, depth = ("cnn", t), i
        elif name in ("secure_search", "_candidates") and i + 1 < len(frames):
            step, depth = ("search", frames[i + 1].f_code.co_name, fr.f_lineno), i
        elif name == "_probe_onehot" and i + 1 < len(frames):
            inner = frames[i + 1].f_code.co_name
            step, depth = ("search: " + ("top-nprobe" if inner == "secure_topk" else "one-hot of the probes"),), i
        elif name == "mask_hidden":
            step, depth = ("result masking",), i
    return step, depth


def _operation(frames: list, depth: int) -> str:
    for fr in reversed(frames[depth + 1:]):
        op = OPERATIONS.get(fr.f_code.co_name)
        if op is not None:
            return op
    return "other"


class RoundProfiler:
    """Counts rounds and bytes per (step, operation) for each party it is attached to."""

    def __init__(self) -> None:
        self.records: dict[int, dict[tuple, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))

    def attach(self, party: Any) -> Any:
        """Wrap ``party.comm.exchange`` (this object only); returns ``party``."""
        comm = party.comm
        inner = comm.exchange
        rec = self.records[party.id if hasattr(party, "id") else comm.party_id]

        def exchange(*args: Any, **kwargs: Any):
            before = comm.stats.bytes_sent
            out = inner(*args, **kwargs)
            frames = []
            f = sys._getframe(1)
            while f is not None:
                frames.append(f)
                f = f.f_back
            frames.reverse()
            step, depth = _step_of(frames)
            r = rec[(step, _operation(frames, depth))]
            r[0] += 1
            r[1] += comm.stats.bytes_sent - before
            return out

        comm.exchange = exchange
        return party

    def _names(self) -> dict[tuple, str]:
        lines: dict[str, set[int]] = defaultdict(set)
        for rec in self.records.values():
            for (step, _op) in rec:
                if step[0] == "search":
                    lines[step[1]].add(step[2])
        names = {}
        for callee, ls in lines.items():
            for j, ln in enumerate(sorted(ls)):
                known = SEARCH_STEP_NAMES.get(callee, [])
                names[("search", callee, ln)] = "search: " + (known[j] if j < len(known) else f"{callee}#{j}")
        return names

    def table(self) -> list[dict[str, Any]]:
        """One row per (step, operation): rounds (party 0) and bytes sent by each party."""
        names = self._names()
        keys: list[tuple] = []
        for rec in self.records.values():
            keys += [k for k in rec if k not in keys]
        rows = []
        for step, op in keys:
            label = names.get(step) or (f"cnn: {step[1]}" if step[0] == "cnn" else step[0])
            per = [self.records[p].get((step, op), [0, 0]) for p in sorted(self.records)]
            rows.append({"step": label, "operation": op, "rounds": max(r[0] for r in per),
                         "bytes_per_party": [r[1] for r in per], "bytes_max_party": max(r[1] for r in per)})
        return rows

    def by_step(self) -> list[dict[str, Any]]:
        """Rows merged over operations: rounds and max-party bytes per step, in first-seen order."""
        out: dict[str, dict[str, Any]] = {}
        for r in self.table():
            s = out.setdefault(r["step"], {"step": r["step"], "rounds": 0, "bytes_per_party": [0, 0, 0]})
            s["rounds"] += r["rounds"]
            s["bytes_per_party"] = [a + b for a, b in zip(s["bytes_per_party"], r["bytes_per_party"])]
        for s in out.values():
            s["bytes_max_party"] = max(s["bytes_per_party"])
        return list(out.values())

    def totals(self) -> dict[str, int]:
        """Rounds (party 0) and bytes per party over everything profiled."""
        rounds = max(sum(r[0] for r in rec.values()) for rec in self.records.values())
        by = [sum(r[1] for r in self.records[p].values()) for p in sorted(self.records)]
        return {"rounds": rounds, "bytes_max_party": max(by), "bytes_per_party": by}


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of ``by_step()`` or ``table()`` rows (MB = 1e6 bytes)."""
    lines = [f"{'step':<34} {'operation':<14} {'rounds':>6} {'MB p0':>9} {'MB p1':>9} {'MB p2':>9}"]
    for r in rows:
        b = r["bytes_per_party"]
        lines.append(f"{r['step']:<34} {r.get('operation', ''):<14} {r['rounds']:>6} "
                     f"{b[0] / 1e6:>9.2f} {b[1] / 1e6:>9.2f} {b[2] / 1e6:>9.2f}")
    return "\n".join(lines)
