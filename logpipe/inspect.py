"""`logpipe inspect`: what each stage changed for each entry, like Promtail's --inspect."""
from __future__ import annotations

from typing import Any, Iterator

import orjson

from logpipe.batch import Batch
from logpipe.pipeline.stage import Pipeline

_INDEX = "\x00entry"  # a hidden column that follows each entry through drops


def _snapshot(batch: Batch, i: int) -> dict[str, Any]:
    extracted = batch.extracted(i)
    extracted.pop(_INDEX, None)
    return {"extracted": extracted, "labels": batch.labels[i].as_dict(), "line": batch.lines[i], "ts": batch.ts[i]}


def _diff(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    out = []
    for part in ("extracted", "labels"):
        b, a = before[part], after[part]
        for k in sorted(set(b) | set(a)):
            if k not in a:
                out.append(f"{part}: -{k}")
            elif k not in b:
                out.append(f"{part}: +{k}={_show(a[k])}")
            elif a[k] != b[k] or type(a[k]) is not type(b[k]):
                out.append(f"{part}: {k}={_show(b[k])} -> {_show(a[k])}")
    if before["line"] != after["line"]:
        out.append(f"line: {_show(before['line'])} -> {_show(after['line'])}")
    if before["ts"] != after["ts"]:
        out.append(f"ts: {before['ts']} -> {after['ts']}")
    return out


def _show(v: Any) -> str:
    return orjson.dumps(v).decode() if isinstance(v, str) else repr(v)


def inspect_batch(pipeline: Pipeline, batch: Batch) -> Iterator[str]:
    """Yields, per input entry: its header, one line per stage that changed it, then the
    final entry in dry-run's JSON format (or `dropped by stage N`)."""
    n = len(batch)
    batch.fields[_INDEX] = list(range(n))
    before = [_snapshot(batch, i) for i in range(n)]
    notes: list[list[str]] = [[] for _ in range(n)]
    fate: dict[int, str] = {}
    for si, stage, out in pipeline.steps(batch):
        idx = out.fields[_INDEX]
        alive = set(idx)
        for orig in range(n):
            if orig not in alive and orig not in fate:
                fate[orig] = f"dropped by stage {si + 1} ({stage.name})"
        for pos, orig in enumerate(idx):
            snap = _snapshot(out, pos)
            changes = _diff(before[orig], snap)
            if changes:
                notes[orig].append(f"  [{si + 1}] {stage.name}: " + "; ".join(changes))
            before[orig] = snap
        batch = out
    final = {orig: pos for pos, orig in enumerate(batch.fields[_INDEX])}
    for orig in range(n):
        yield f"entry {orig + 1}:"
        yield from notes[orig]
        if orig in final:
            yield "  => " + orjson.dumps(batch.entry(final[orig])).decode()
        else:
            yield "  => " + fate.get(orig, "dropped")
