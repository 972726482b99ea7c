"""The human side of a run: latency and rate plots with fault windows shaded, and index.html.

`latency.png`: every completed operation as a point at (invoke time, latency), coloured by
outcome (ok, fail, info; info points sit at the timeout), on a log scale. `rate.png`:
completions per second by outcome. Both shade each fault window with its kind. `index.html`
ties the verdict, the counts, the faults and the plots together; it is self-contained apart
from the two images beside it. matplotlib runs headless (the Agg backend).
"""

from __future__ import annotations

import html
import json
from collections import Counter
from pathlib import Path
from typing import Any

from chaos.history import Operation, OpType

COLOURS = {OpType.OK: "#2b8a3e", OpType.FAIL: "#c92a2a", OpType.INFO: "#e67700"}
FAULT_COLOURS = ["#a5d8ff", "#ffc9c9", "#d8f5a2", "#ffe8cc", "#e5dbff", "#c3fae8", "#fff3bf"]


def write(folder: Path, ops: list[Operation], faults: list[dict[str, Any]],
          results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    t0 = min((o.start for o in ops), default=0)
    timeout = results.get("options", {}).get("op_timeout_s", 5.0)
    kinds = sorted({f["kind"] for f in faults})
    shade = {k: FAULT_COLOURS[i % len(FAULT_COLOURS)] for i, k in enumerate(kinds)}

    def shade_faults(ax: Any) -> None:
        for f in faults:
            end = f["end_ns"] if f["end_ns"] is not None else f["start_ns"]
            ax.axvspan((f["start_ns"] - t0) / 1e9, (end - t0) / 1e9, color=shade[f["kind"]],
                       alpha=0.5, lw=0, label=f"fault: {f['kind']}")

    fig, ax = plt.subplots(figsize=(11, 4.5))
    shade_faults(ax)
    for kind, colour in COLOURS.items():
        xs = [(o.start - t0) / 1e9 for o in ops if o.type is kind]
        ys = [((o.end - o.start) / 1e6) if o.end != float("inf") else timeout * 1000
              for o in ops if o.type is kind]
        if xs:
            ax.scatter(xs, ys, s=4, color=colour, label=kind.value, alpha=0.7)
    ax.set_yscale("log")
    ax.set_xlabel("time since the first operation (s)")
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"{results['workload']}: latency by outcome")
    _legend(ax)
    fig.tight_layout()
    fig.savefig(folder / "latency.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(11, 3.5))
    shade_faults(ax)
    for kind, colour in COLOURS.items():
        per_s = Counter(int((o.end - t0) / 1e9) for o in ops
                        if o.type is kind and o.end != float("inf"))
        if per_s:
            xs = range(max(per_s) + 1)
            ax.plot(list(xs), [per_s.get(x, 0) for x in xs], color=colour, label=kind.value)
    ax.set_xlabel("time since the first operation (s)")
    ax.set_ylabel("completions per second")
    _legend(ax)
    fig.tight_layout()
    fig.savefig(folder / "rate.png", dpi=110)
    plt.close(fig)
    (folder / "index.html").write_text(_html(results, faults), encoding="utf-8")


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def _legend(ax: Any) -> None:
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), loc="upper right", fontsize=8)


def _html(results: dict[str, Any], faults: list[dict[str, Any]]) -> str:
    esc = html.escape
    verdict = "VALID" if results["valid"] else "INVALID"
    colour = "#2b8a3e" if results["valid"] else "#c92a2a"
    rows = "".join(
        f"<tr><td>{f['start']:.1f}</td><td>{_seconds(f['end'])}</td>"
        f"<td>{esc(f['kind'])}</td><td>{esc(f['what'])}</td></tr>" for f in faults)
    counts = results["operations"]
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>ringlock chaos: {esc(results['workload'])}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:70em}}td,th{{padding:2px 8px;
text-align:left}}pre{{background:#f4f4f4;padding:1em;overflow:auto}}</style></head><body>
<h1>{esc(results['workload'])} under {esc(', '.join(results['nemeses']) or 'no faults')}
<span style="color:{colour}">{verdict}</span></h1>
<p>seed {results['seed']} &middot; {results['duration_s']} s &middot; operations:
{counts['total']} ({counts['ok']} ok, {counts['fail']} fail, {counts['info']} info)
{' &middot; <b>negative control (unsafe mode)</b>' if results['unsafe'] else ''}</p>
<img src="latency.png" alt="latency over time"><br><img src="rate.png" alt="rate over time">
<h2>Faults</h2><table><tr><th>start (s)</th><th>end (s)</th><th>kind</th><th>what</th></tr>
{rows}</table>
<h2>Checker</h2><pre>{esc(json.dumps(results['checker'], indent=2, default=str))}</pre>
<p>Files: <a href="history.jsonl">history.jsonl</a> &middot;
<a href="results.json">results.json</a></p></body></html>
"""
