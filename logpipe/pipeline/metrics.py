"""The `metrics` stage: Promtail's counters, gauges and histograms derived from extracted values.

Vectorized: each metric is updated once per distinct label set per batch (a histogram buckets
the whole batch with one `searchsorted` and one `bincount`), and the series are exposed by one
collector per registry instead of one prometheus-client child per series. The results equal
Promtail's entry-at-a-time updates exactly, float sums included: `np.bincount` adds weights in
input order, so each series' running value is put first and the batch's values follow it.
"""
from __future__ import annotations

import math
import re
import threading
import time
import weakref
from dataclasses import dataclass
from dataclasses import field as dc_field
from decimal import Decimal
from itertools import compress, repeat
from operator import attrgetter, eq, is_, is_not
from typing import Any, Callable, Iterator

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.samples import Sample

from logpipe.batch import Batch, LabelSet
from logpipe.config.decode import LABEL_NAME, Ctx, decode, field, join
from logpipe.config.units import Duration
from logpipe.errors import LogpipeError
from logpipe.pipeline.stage import Stage, StageEnv
from logpipe.pipeline.values import ValueCache, format_float, go_string

DEFAULT_PREFIX = "logpipe_custom_"  # Promtail's is promtail_custom_
DEFAULT_MAX_IDLE = 300.0  # Promtail's default max_idle_duration: 5m
DEFAULT_MAX_SERIES = 10_000
# client_golang's DefBuckets, which a Promtail histogram without `buckets` gets.
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ACTIONS = {"counter": ("inc", "add"), "gauge": ("set", "inc", "dec", "add", "sub"), "histogram": ()}
METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


# --- Promtail's value conversions (getFloat, strconv.ParseFloat, time.ParseDuration) ------------

_DIGITS = r"\d(?:_?\d)*"  # Go and Python agree on underscores between digits
_GO_DECIMAL = re.compile(rf"[+-]?(?:{_DIGITS}(?:\.(?:{_DIGITS})?)?|\.{_DIGITS})(?:[eE][+-]?{_DIGITS})?", re.ASCII)
_HEX = r"[0-9a-fA-F](?:_?[0-9a-fA-F])*"
_GO_HEX = re.compile(rf"[+-]?0[xX](?:_?{_HEX}(?:\.(?:{_HEX})?)?|\.{_HEX})[pP][+-]?{_DIGITS}", re.ASCII)
# ParseFloat's special values; only infinities take a sign.
_GO_SPECIAL = {s: float(s) for s in ("inf", "+inf", "-inf", "infinity", "+infinity", "-infinity", "nan")}
_DURATION_UNITS = {"ns": 1, "us": 10**3, "\u00b5s": 10**3, "\u03bcs": 10**3, "ms": 10**6, "s": 10**9,
                   "m": 60 * 10**9, "h": 3600 * 10**9}
_NUMERIC = {float, int, bool}
_SCALARS = {str, float, int, bool, type(None)}


def go_number(value: Any) -> float | None:
    """An extracted value as Promtail's metrics read it (getFloat), or None if it has none.

    Numbers are themselves, `true`/`false` are 1/0, and a string is strconv.ParseFloat's
    number or else a Go duration in seconds ("0.5ms" -> 0.0005).
    """
    t = type(value)
    if t is float:
        return value
    if t is int or t is bool:
        try:
            return float(value)
        except OverflowError:
            return None
    if t is str:
        number = parse_go_float(value)
        return number if number is not None else parse_go_duration(value)
    return None


def parse_go_float(text: str) -> float | None:
    """strconv.ParseFloat(text, 64), or None where Go returns an error.

    Unlike Python's float(): no surrounding spaces, no non-ASCII digits, no signed NaN, hex
    floats (0x1p-2) accepted, and out-of-range (1e999) refused instead of read as infinity.
    """
    if _GO_DECIMAL.fullmatch(text):
        number = float(text)
        return None if math.isinf(number) else number
    if text.isascii():
        special = _GO_SPECIAL.get(text.lower())
        if special is not None:
            return special
        if _GO_HEX.fullmatch(text):
            try:
                return float.fromhex(text.replace("_", ""))
            except OverflowError:
                return None
    return None


def parse_go_duration(text: str) -> float | None:
    """time.ParseDuration(text).Seconds(), or None where Go returns an error."""
    s, neg = text, False
    if s[:1] in ("-", "+"):
        neg, s = s[0] == "-", s[1:]
    if s == "0":
        return 0.0
    if not s:
        return None
    total, limit = 0, 1 << 63
    while s:
        if not (s[0] == "." or "0" <= s[0] <= "9"):
            return None
        whole, s, ok = _leading_int(s)
        if not ok:
            return None
        frac, scale, had_frac = 0, 1.0, False
        if s[:1] == ".":
            frac, scale, s, had_frac = _leading_fraction(s[1:])
        if whole is None and not had_frac:
            return None
        i = 0
        while i < len(s) and not (s[i] == "." or "0" <= s[i] <= "9"):
            i += 1
        unit = _DURATION_UNITS.get(s[:i])
        if unit is None:
            return None
        s = s[i:]
        v = whole or 0
        if v > limit // unit:
            return None
        v *= unit
        if frac > 0:
            v += int(float(frac) * (float(unit) / scale))  # Go's float64 step, truncated
            if v > limit:
                return None
        total += v
        if total > limit:
            return None
    if not neg and total > limit - 1:
        return None
    sec, nsec = divmod(total, 10**9)  # Go's Seconds(): whole seconds, then the rest
    seconds = float(sec) + float(nsec) / 1e9
    return -seconds if neg else seconds


def _leading_int(s: str) -> tuple[int | None, str, bool]:
    x, i = 0, 0
    while i < len(s) and "0" <= s[i] <= "9":
        if x > (1 << 63) // 10:
            return None, s, False
        x = x * 10 + ord(s[i]) - 48
        if x > 1 << 63:
            return None, s, False
        i += 1
    return (x if i else None), s[i:], True


def _leading_fraction(s: str) -> tuple[int, float, str, bool]:
    x, scale, i, overflow = 0, 1.0, 0, False
    while i < len(s) and "0" <= s[i] <= "9":
        if not overflow:
            y = x * 10 + ord(s[i]) - 48
            if x > ((1 << 63) - 1) // 10 or y > 1 << 63:
                overflow = True  # Go keeps the digits read so far and skips the rest
            else:
                x, scale = y, scale * 10
        i += 1
    return x, scale, s[i:], i > 0


def go_float_label(value: float) -> str:
    """A bucket bound as client_golang prints `le`: FormatFloat(v, 'g', -1, 64) ("1", "1e+06")."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0"
    digits = Decimal(repr(value)).normalize().as_tuple()
    exp = len(digits.digits) + int(digits.exponent) - 1
    if -4 <= exp < 6:  # Go's shortest 'g' switches to exponents outside this range
        return format_float(value)
    mant = "".join(map(str, digits.digits))
    mant = mant[0] + ("." + mant[1:] if len(mant) > 1 else "")
    return f"{'-' if digits.sign else ''}{mant}e{'+' if exp >= 0 else '-'}{abs(exp):02d}"


# --- config ----------------------------------------------------------------------------------

@dataclass
class MetricOptions:
    """A metric's `config:` block; which keys mean something depends on the metric type."""

    value: str | None = None
    action: str = ""
    match_all: bool | None = None
    count_entry_bytes: bool | None = None
    buckets: list[float] | None = None


@dataclass
class MetricConfig:
    metric_type: str = field("type", "")
    description: str = ""
    source: str | None = None
    prefix: str = ""
    max_idle_duration: Duration | None = None
    max_series: int = DEFAULT_MAX_SERIES  # logpipe's cardinality guard; 0 turns it off
    config: MetricOptions = dc_field(default_factory=MetricOptions)

    @property
    def kind(self) -> str:
        return self.metric_type.lower()

    def validate(self, ctx: Ctx, path: str) -> None:
        kind, cfg, cpath = self.kind, self.config, join(path, "config")
        if kind not in ACTIONS:
            ctx.error(join(path, "type"), f"invalid metric type '{kind}', metric type must be one of "
                                          "'counter', 'gauge', or 'histogram'")
            return
        if self.max_idle_duration is not None and self.max_idle_duration < 1:
            ctx.error(join(path, "max_idle_duration"), "max_idle_duration less than 1s not allowed")
        if self.max_series < 0:
            ctx.error(join(path, "max_series"), "max_series must be 0 (no limit) or more")
        action, apath = cfg.action.lower(), join(cpath, "action")
        match_all, count_bytes = bool(cfg.match_all), bool(cfg.count_entry_bytes)
        if kind == "counter":
            if not action:
                ctx.error(apath, "counter action must be defined as either `inc` or `add`")
            elif action not in ACTIONS["counter"]:
                ctx.error(apath, f"action {action} is not valid, action must be either `inc` or `add`")
            if match_all and cfg.value is not None:
                ctx.error(join(cpath, "match_all"), "`match_all: true` cannot be combined with `value`, "
                                                   "please remove `match_all` or `value`")
            if count_bytes and not match_all:
                ctx.error(join(cpath, "count_entry_bytes"), "`count_entry_bytes: true` can only be set with "
                                                           "`match_all: true`")
            if count_bytes and action != "add":
                ctx.error(join(cpath, "count_entry_bytes"), "`count_entry_bytes: true` can only be used with "
                                                           "`action: add`")
            if match_all and not count_bytes and action == "add":
                # Promtail accepts this and then never counts: there is no value to add.
                ctx.error(apath, "`match_all: true` counts lines with `action: inc`; `action: add` needs "
                                 "`count_entry_bytes: true` to add each line's bytes")
        elif kind == "gauge":
            if not action:
                ctx.error(apath, "gauge action must be defined as `set`, `inc`, `dec`, `add`, or `sub`")
            elif action not in ACTIONS["gauge"]:
                ctx.error(apath, f"action {action} is not valid, action must be `set`, `inc`, `dec`, `add`, or `sub`")
        else:
            bounds = cfg.buckets or []
            if any(math.isnan(b) for b in bounds):
                ctx.error(join(cpath, "buckets"), "histogram buckets cannot be NaN")
            elif any(a >= b for a, b in zip(bounds, bounds[1:])):
                ctx.error(join(cpath, "buckets"), "histogram buckets must be in increasing order")

    def ignored_options(self) -> list[str]:
        """Options Promtail silently ignores for this metric type (it decodes them and moves on)."""
        cfg, kind = self.config, self.kind
        unused = {"counter": ("buckets",), "gauge": ("match_all", "count_entry_bytes", "buckets"),
                  "histogram": ("action", "match_all", "count_entry_bytes")}[kind]
        return [k for k in unused if getattr(cfg, k) not in (None, "")]


@dataclass
class MetricsConfig:
    """`metrics: {name: {type, description, source, prefix, max_idle_duration, config}}`."""

    metrics: dict[str, MetricConfig]

    @classmethod
    def from_yaml(cls, value: Any, ctx: Ctx, path: str) -> "MetricsConfig | None":
        if not value:
            ctx.error(path, "empty metric stage configuration")
            return None
        metrics = decode(dict[str, MetricConfig], value, ctx, path)
        if not isinstance(metrics, dict):
            return None
        for name, m in metrics.items():
            prefix = m.prefix or DEFAULT_PREFIX
            if not METRIC_NAME.fullmatch(prefix + name):
                where = join(path, name) if METRIC_NAME.fullmatch(prefix) else join(join(path, name), "prefix")
                ctx.error(where, f"{prefix + name!r} is not a valid Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)")
        return cls(metrics)

    def build(self, env: StageEnv) -> "MetricsStage":
        derived = DerivedMetrics.of(env.metrics.registry)
        plans = []
        for name, m in self.metrics.items():
            full = (m.prefix or DEFAULT_PREFIX) + name
            for option in m.ignored_options():
                env.log.warning("metrics stage: %s: `%s` has no meaning for a %s and is ignored, as in Promtail",
                                full, option, m.kind)
            bounds = tuple(m.config.buckets or DEFAULT_BUCKETS)
            if bounds and math.isinf(bounds[-1]) and bounds[-1] > 0:
                bounds = bounds[:-1]  # +Inf is implicit, as in client_golang
            max_idle = DEFAULT_MAX_IDLE if m.max_idle_duration is None else float(m.max_idle_duration)
            vector = derived.vector(full, m.kind, m.description, bounds if m.kind == "histogram" else (),
                                    int(max_idle), m.max_series)
            plans.append(_Plan(m, name, vector))
        return MetricsStage(plans, derived, env)


# --- series storage and the collector --------------------------------------------------------

class _Series:
    """One series. A counter keeps client_golang's two parts: integral adds in `ints` (exact),
    the others in `value`; its value is float(ints) + value, as Go computes it. A histogram's
    bucket counts are row `row` of its vector's count table."""

    __slots__ = ("labels", "touched", "ints", "value", "row", "sum", "count")

    def __init__(self, labels: dict[str, str], row: int):
        self.labels = labels
        self.touched = 0
        self.ints = 0
        self.value = 0.0
        self.row = row
        self.sum = 0.0
        self.count = 0


_ROW, _SUM, _VALUE = attrgetter("row"), attrgetter("sum"), attrgetter("value")


class MetricVector:
    """All series of one derived metric, keyed by their labels; shared by every stage that
    defines the metric (the same pipeline in two scrape configs adds into one series)."""

    def __init__(self, name: str, kind: str, help_text: str, bounds: tuple[float, ...], max_idle: int,
                 max_series: int):
        self.name, self.kind, self.help = name, kind, help_text
        self.bounds = np.array(bounds, dtype=np.float64)
        self.le = [go_float_label(b) for b in bounds] + ["+Inf"]
        self.max_idle, self.max_series = max_idle, max_series
        self.series: dict[LabelSet, _Series] = {}
        self.lock = threading.Lock()
        self.warned_full = False
        self._by_entry_labels: dict[LabelSet, _Series] = {}  # entry label set -> its series
        # histogram bucket counts (not cumulative), one row per series; rows of removed series are reused
        self.table = np.zeros((16 if kind == "histogram" else 0, len(self.le)), dtype=np.int64)
        self._free_rows: list[int] = []
        self._cleaned: set[LabelSet] = set()  # entry label sets whose series leaves labels out

    def _series(self, labels: LabelSet, refused: set[LabelSet]) -> _Series | None:
        s = self._by_entry_labels.get(labels)
        if s is not None:
            return s
        key = self._key(labels)
        s = self.series.get(key)
        if s is None:
            if self.max_series and len(self.series) >= self.max_series:
                refused.add(key)
                return None
            s = self.series[key] = _Series(key.as_dict(), self._new_row() if self.kind == "histogram" else -1)
        if len(self._by_entry_labels) >= 65536:
            self._by_entry_labels.clear()
            self._cleaned.clear()
        self._by_entry_labels[labels] = s
        if key is not labels:
            self._cleaned.add(labels)
        return s

    def _key(self, labels: LabelSet) -> LabelSet:
        # Promtail leaves out `__` labels and invalid names; `le` would clash with the buckets.
        keep = [(k, v) for k, v in labels.items
                if not k.startswith("__") and LABEL_NAME.fullmatch(k) and not (k == "le" and self.kind == "histogram")]
        return labels if len(keep) == len(labels) else LabelSet.of(keep)

    def _new_row(self) -> int:
        if self._free_rows:
            return self._free_rows.pop()
        row = len(self.series)
        if row >= len(self.table):
            self.table = np.concatenate((self.table, np.zeros_like(self.table)))
        return row

    def _remove(self, keys: list[LabelSet]) -> None:
        for key in keys:
            s = self.series.pop(key)
            if s.row >= 0:
                self.table[s.row] = 0
                self._free_rows.append(s.row)
        self._by_entry_labels.clear()
        self._cleaned.clear()

    def record(self, groups: list[LabelSet], gids: np.ndarray, values: np.ndarray | None, op: str, now: int) -> int:
        """Apply one batch: `gids[i]` is entry i's index in `groups`, `values[i]` its number.
        Returns how many new series the cardinality guard refused."""
        with self.lock:
            per_group = np.bincount(gids, minlength=len(groups))
            series = list(map(self._by_entry_labels.get, groups))
            refused: set[LabelSet] = set()
            if None not in series and per_group.all() and self._cleaned.isdisjoint(groups):
                lids = gids  # the usual case: each label set has entries and a series of its own
            else:
                series, slots = [], []
                index: dict[int, int] = {}
                for labels, n in zip(groups, per_group.tolist()):
                    s = self._series(labels, refused) if n else None
                    if s is None:
                        slots.append(-1)
                        continue
                    # label sets that differ only in left-out labels share a series
                    slot = index.setdefault(id(s), len(series))
                    if slot == len(series):
                        series.append(s)
                    slots.append(slot)
                if not series:
                    return len(refused)
                lids = np.array(slots, dtype=np.intp)[gids]
                if refused:
                    keep = lids >= 0
                    lids = lids[keep]
                    values = values[keep] if values is not None else None
            getattr(self, "_" + op)(series, lids, values)
            for s in series:
                s.touched = now
            return len(refused)

    # Each op gets the batch's series and, per entry, the index of its series and its value.

    @staticmethod
    def _in_order(start: list[float], lids: np.ndarray, values: np.ndarray) -> list[float]:
        """Each series' start value plus its values, added one at a time in entry order."""
        n = len(start)
        return np.bincount(np.concatenate((np.arange(n), lids)), weights=np.concatenate((start, values)),
                           minlength=n).tolist()

    def _inc(self, series: list[_Series], lids: np.ndarray, values: None) -> None:
        counts = np.bincount(lids, minlength=len(series)).tolist()
        if self.kind == "counter":
            for s, c in zip(series, counts):
                s.ints += c
        else:
            for s, c in zip(series, counts):
                s.value += c  # a gauge that only counts holds whole numbers: exact

    def _dec(self, series: list[_Series], lids: np.ndarray, values: None) -> None:
        for s, c in zip(series, np.bincount(lids, minlength=len(series)).tolist()):
            s.value -= c

    def _add(self, series: list[_Series], lids: np.ndarray, values: np.ndarray) -> None:
        if self.kind == "counter":
            # client_golang adds a whole value below 2^64 to an integer, the rest to a float.
            whole = (values == np.floor(values)) & (values < 2.0**64)
            sums = np.bincount(lids[whole], weights=values[whole], minlength=len(series))
            if sums.max(initial=0) < 2.0**53:
                for s, total in zip(series, sums.tolist()):
                    s.ints += int(total)
            else:
                for i, s in enumerate(series):
                    s.ints += sum(map(int, values[whole][lids[whole] == i].tolist()))
            lids, values = lids[~whole], values[~whole]
            if not len(lids):
                return
        for s, v in zip(series, self._in_order(list(map(_VALUE, series)), lids, values)):
            s.value = v

    def _sub(self, series: list[_Series], lids: np.ndarray, values: np.ndarray) -> None:
        self._add(series, lids, -values)  # Go's Sub(v) is Add(-v)

    def _set(self, series: list[_Series], lids: np.ndarray, values: np.ndarray) -> None:
        # The last entry of the batch wins, as with one Set per entry.
        which, first = np.unique(lids[::-1], return_index=True)
        for i, v in zip(which.tolist(), values[::-1][first].tolist()):
            series[i].value = v

    def _observe(self, series: list[_Series], lids: np.ndarray, values: np.ndarray) -> None:
        width, n = len(self.le), len(series)
        # `le` is inclusive: a value goes to the first bound >= it; NaN and +Inf to +Inf.
        bucket = np.searchsorted(self.bounds, values, side="left")
        counts = np.bincount(lids * width + bucket, minlength=n * width).reshape(n, width)
        self.table[list(map(_ROW, series))] += counts
        sums = self._in_order(list(map(_SUM, series)), lids, values)
        for s, total, count in zip(series, sums, counts.sum(axis=1).tolist()):
            s.count += count
            s.sum = total

    def family(self, now: int) -> Metric:
        with self.lock:
            if self.max_idle:
                idle = [k for k, s in self.series.items() if now - s.touched >= self.max_idle]
                if idle:
                    self._remove(idle)
            series = list(self.series.values())
            if self.kind == "histogram":
                cumulative = np.cumsum(self.table[[s.row for s in series]], axis=1).tolist()
                snap = [(s.labels, c, s.sum, s.count) for s, c in zip(series, cumulative)]
            elif self.kind == "counter":
                snap = [(s.labels, float(s.ints) + s.value) for s in series]
            else:
                snap = [(s.labels, s.value) for s in series]
        # Series of one metric may carry different label names, so samples are added directly.
        if self.kind == "histogram":
            fam: Metric = HistogramMetricFamily(self.name, self.help)
            for labels, cumulative, total, count in snap:
                for le, c in zip(self.le, cumulative):
                    fam.samples.append(Sample(self.name + "_bucket", {**labels, "le": le}, float(c)))
                fam.samples.append(Sample(self.name + "_count", labels, float(count)))
                fam.samples.append(Sample(self.name + "_sum", labels, total))
        elif self.kind == "counter":
            fam = CounterMetricFamily(self.name, self.help)  # exposed as <name>_total
            fam.samples.extend(Sample(fam.name + "_total", labels, v) for labels, v in snap)
        else:
            fam = GaugeMetricFamily(self.name, self.help)
            fam.samples.extend(Sample(self.name, labels, v) for labels, v in snap)
        return fam


_BY_REGISTRY: "weakref.WeakKeyDictionary[CollectorRegistry, DerivedMetrics]" = weakref.WeakKeyDictionary()
_BY_REGISTRY_LOCK = threading.Lock()


class DerivedMetrics:
    """The collector of every metric the metrics stages derive, one per registry.

    Series not updated for their metric's max_idle_duration are removed when collected.
    `clock` (seconds) is replaceable for tests.
    """

    def __init__(self, clock: Callable[[], float] = time.time):
        self.clock = clock
        self.vectors: dict[str, MetricVector] = {}
        self._lock = threading.Lock()

    @staticmethod
    def of(registry: CollectorRegistry) -> "DerivedMetrics":
        with _BY_REGISTRY_LOCK:
            derived = _BY_REGISTRY.get(registry)
            if derived is None:
                derived = _BY_REGISTRY[registry] = DerivedMetrics()
                registry.register(derived)
            return derived

    def vector(self, name: str, kind: str, help_text: str, bounds: tuple[float, ...], max_idle: int,
               max_series: int) -> MetricVector:
        # A counter is exposed as <name>_total, so `x` and `x_total` are one metric.
        key = name.removesuffix("_total") if kind == "counter" else name
        with self._lock:
            vec = self.vectors.get(key)
            if vec is None:
                vec = self.vectors[key] = MetricVector(name, kind, help_text, bounds, max_idle, max_series)
            elif vec.kind != kind or tuple(vec.bounds.tolist()) != bounds:
                raise LogpipeError(
                    f"metrics stage: {name} is defined twice, as a {vec.kind} and as a {kind}"
                    + (" with other buckets" if vec.kind == kind else "")
                    + "; give one of them another name or prefix"
                )
            return vec

    def describe(self) -> list[Metric]:
        # Names come and go with the pipelines; like Promtail's collectors, this one is unchecked.
        return []

    def collect(self) -> Iterator[Metric]:
        now = int(self.clock())
        for vec in list(self.vectors.values()):
            yield vec.family(now)


# --- the stage -------------------------------------------------------------------------------

class _Plan:
    """One configured metric, compiled: what to read, how to filter, what to apply."""

    def __init__(self, m: MetricConfig, name: str, vector: MetricVector):
        cfg = m.config
        self.vector = vector
        self.name = vector.name
        self.source = name if m.source is None else m.source
        self.value = cfg.value
        self.kind = m.kind
        action = cfg.action.lower()
        self.match_all = self.kind == "counter" and bool(cfg.match_all)
        self.count_bytes = self.match_all and bool(cfg.count_entry_bytes)
        self.op = "observe" if self.kind == "histogram" else action
        self.numeric = self.op in ("add", "sub", "set", "observe")


class _Column:
    """A source column as the metrics of one batch read it (its types decide the fast paths)."""

    __slots__ = ("values", "_kinds", "_present")

    def __init__(self, values: list[Any]):
        self.values = values
        self._kinds: set[type] | None = None
        self._present: np.ndarray | None | bool = False

    @property
    def kinds(self) -> set[type]:
        if self._kinds is None:
            self._kinds = set(map(type, self.values))
        return self._kinds

    @property
    def present(self) -> np.ndarray | None:
        """Which entries have the key (None marks one that has not); None when all have it."""
        if self._present is False:
            has_none = type(None) in self._kinds if self._kinds is not None else None in self.values
            self._present = (np.fromiter(map(is_not, self.values, repeat(None)), bool, len(self.values))
                             if has_none else None)
        return self._present  # type: ignore[return-value]


class MetricsStage(Stage):
    name = "metrics"

    def __init__(self, plans: list[_Plan], derived: DerivedMetrics, env: StageEnv):
        self.plans = plans
        self.derived = derived
        self.env = env
        self._numbers = ValueCache(go_number)

    def process(self, batch: Batch) -> Batch:
        groups, gids = _group(batch.labels)
        now = int(self.derived.clock())
        columns: dict[str, _Column | None] = {}
        for plan in self.plans:
            found = self._entries(plan, batch, gids, columns)
            if found is not None and len(found[0]):
                refused = plan.vector.record(groups, found[0], found[1], plan.op, now)
                if refused:
                    self._refused(plan, refused)
        return batch

    def _entries(self, plan: _Plan, batch: Batch, gids: np.ndarray,
                 columns: dict[str, _Column | None]) -> tuple[np.ndarray, np.ndarray | None] | None:
        """The group index of each entry the metric records, and its number where it needs one."""
        if plan.match_all:
            return gids, (_utf8_lengths(batch.lines) if plan.count_bytes else None)
        if plan.source not in columns:
            raw = batch.field(plan.source)
            columns[plan.source] = _Column(raw) if raw is not None else None
        col = columns[plan.source]
        if col is None:
            return None  # Promtail: "source does not exist"
        sel = col.present if plan.value is None else self._equals(col, plan.value)
        if sel is None:
            picked, items = gids, col.values
        else:
            picked, items = gids[sel], list(compress(col.values, sel))
        if not plan.numeric or not len(picked):
            return picked, None
        if plan.value is not None and col.kinds <= {str, type(None)}:
            # every picked entry holds the same text: one conversion
            number = go_number(plan.value)
            values = np.full(len(items), np.nan if number is None else number)
            bad = None if number is not None else np.ones(len(items), bool)
        else:
            values, bad = self._to_numbers(items, col.kinds - {type(None)})
        bad = self._refuse(plan, values, bad)
        return (picked, values) if bad is None else (picked[~bad], values[~bad])

    def _refuse(self, plan: _Plan, values: np.ndarray, bad: np.ndarray | None) -> np.ndarray | None:
        """Count the values the metric cannot use (once per batch); the mask of them, or None."""
        if bad is not None:
            self._count_errors(plan, "value_not_a_number", int(bad.sum()))
        if plan.op == "add" and plan.kind == "counter":
            # client_golang panics on a negative add; logpipe skips the value and counts it.
            negative = values < 0  # failed values are NaN, never negative
            if negative.any():
                self._count_errors(plan, "negative_counter_add", int(negative.sum()))
                bad = negative if bad is None else bad | negative
        return bad

    def _count_errors(self, plan: _Plan, reason: str, n: int) -> None:
        if n:
            self.env.metrics.metric_value_errors.labels(plan.name).inc(n)
            self.env.metrics.stage_error(self.name, reason, n)

    def _refused(self, plan: _Plan, refused: int) -> None:
        self.env.metrics.metric_series_dropped.labels(plan.name).inc(refused)
        vec = plan.vector
        if not vec.warned_full:
            vec.warned_full = True
            self.env.log.warning("metrics stage: %s reached max_series (%d); new label sets are not recorded "
                                 "(logpipe_metric_series_dropped_total counts them)", vec.name, vec.max_series)

    def _equals(self, col: _Column, value: str) -> np.ndarray:
        """Entries whose value prints as `value` (Promtail compares getString's text)."""
        n = len(col.values)
        if col.kinds <= {str, type(None)}:
            return np.fromiter(map(eq, col.values, repeat(value)), bool, n)
        def matches(v: Any) -> bool:
            return go_string(v) == value

        return np.fromiter(_per_value(ValueCache(matches), matches, col.values, col.kinds), bool, n)

    def _to_numbers(self, items: list[Any], kinds: set[type]) -> tuple[np.ndarray, np.ndarray | None]:
        """The numbers Promtail reads from `items` (NaN where none) and the mask of failures;
        `kinds` holds at least the types of the items."""
        k = len(items)
        if kinds <= _NUMERIC:
            try:
                return np.array(items, dtype=np.float64), None
            except (OverflowError, ValueError, TypeError):
                pass
        elif kinds == {str}:
            if k > 64 and len(set(items[:64])) <= 32:
                # Few distinct texts (status codes, rounded latencies): convert each once.
                index = {text: i for i, text in enumerate(dict.fromkeys(items))}
                if len(index) * 2 <= k:
                    numbers, bad = self._to_numbers(list(index), kinds)
                    at = np.fromiter(map(index.__getitem__, items), np.intp, k)
                    return numbers[at], (bad[at] if bad is not None else None)
            # Python's float() reads exactly Go's decimal syntax once spaces and non-ASCII text are
            # ruled out; what it reads as infinite or NaN is checked again (1e999, -nan).
            text = "".join(items)
            if text.isascii() and text.isprintable() and " " not in text:
                try:
                    values = np.fromiter(map(float, items), np.float64, k)
                except ValueError:
                    pass
                else:
                    odd = np.flatnonzero(~np.isfinite(values)).tolist()
                    if not odd:
                        return values, None
                    bad = np.zeros(k, bool)
                    for i in odd:
                        number = go_number(items[i])
                        values[i] = np.nan if number is None else number
                        bad[i] = number is None
                    return values, bad
        numbers = list(_per_value(self._numbers, go_number, items, kinds))
        bad = np.fromiter(map(is_, numbers, repeat(None)), bool, k)
        if bad.any():
            numbers = [math.nan if v is None else v for v in numbers]
            return np.array(numbers, dtype=np.float64), bad
        return np.array(numbers, dtype=np.float64), None


def _per_value(cache: ValueCache, fn: Callable[[Any], Any], items: list[Any], kinds: set[type]) -> Iterator[Any]:
    """fn over items, computed once per distinct value when the values can be dict keys."""
    if kinds <= _SCALARS:
        return map(cache.__getitem__, items)
    return map(fn, items)


class _GroupIndex(dict):
    def __missing__(self, key: LabelSet) -> int:
        index = self[key] = len(self)
        return index


def _group(labels: list[LabelSet]) -> tuple[list[LabelSet], np.ndarray]:
    """The batch's distinct label sets and each entry's index among them (label sets are
    interned, so this is one identity-hashed dict lookup per entry, in C)."""
    n = len(labels)
    if n and labels[0] is labels[-1] and labels.count(labels[0]) == n:
        return [labels[0]], np.zeros(n, dtype=np.intp)
    index = _GroupIndex()
    gids = np.fromiter(map(index.__getitem__, labels), np.intp, n)
    return list(index), gids


def _utf8_lengths(lines: list[str]) -> np.ndarray:
    """Each line's length in UTF-8 bytes, as Go's len() counts it."""
    lengths = np.fromiter(map(len, lines), np.float64, len(lines))
    if not all(map(str.isascii, lines)):
        for i in compress(range(len(lines)), map(is_, map(str.isascii, lines), repeat(False))):
            lengths[i] = len(lines[i].encode("utf-8", "surrogatepass"))
    return lengths
