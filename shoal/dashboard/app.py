"""The Streamlit app of ``shoal dashboard`` (run by ``streamlit run``): three views over
the run registry, the event streams and the history. Where it reads from comes from
``$SHOAL_STORAGE`` and ``$SHOAL_HISTORY`` (``shoal dashboard`` sets them from its options).

Everything shown is computed by :mod:`.fold` and drawn by :mod:`.figures`; this file only
lays it out and keeps each session's place in the event stream it tails.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Coroutine
from datetime import datetime
from typing import Any, TypeVar

import streamlit as st

from shoal.dashboard import figures
from shoal.dashboard.fold import (
    FOLD_ABOVE,
    STATE_ORDER,
    LiveRun,
    Shape,
    State,
    critical_path,
    fold_by_function,
    history_rows,
    planned_vs_real,
    timeline,
    where_the_time_went,
)
from shoal.history import RunRecord, open_history
from shoal.stores import Store, open_store

T = TypeVar("T")

#: How often the live view reads the stream it tails.
REFRESH_S = 0.5
VIEWS = ("Live run", "Run analysis", "History")


class _Loop:
    """An event loop on a thread of its own, for the store's asyncio client: Streamlit
    runs this script on threads that come and go."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="shoal-dashboard", daemon=True).start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)


@st.cache_resource
def _loop() -> _Loop:
    return _Loop()


@st.cache_resource
def _store(url: str) -> Store:
    async def open_() -> Store:
        return open_store(url)

    return _loop().run(open_())


def _history() -> Any:
    return open_history(os.environ.get("SHOAL_HISTORY") or None)


def main() -> None:
    st.set_page_config(page_title="Shoal", layout="wide")
    st.sidebar.title("Shoal")
    view = st.sidebar.radio("View", VIEWS, key="view")
    if view == "Live run":
        live_view()
    elif view == "Run analysis":
        analysis_view()
    else:
        history_view()


# --------------------------------------------------------------------------- live


def live_view() -> None:
    st.header("Live run")
    url = os.environ.get("SHOAL_STORAGE") or "memory://"
    if url.startswith("memory"):
        st.info(
            "Runs on memory:// live in their client's own process, where no other process "
            'can watch them. Run on a store other processes can read (storage="redis://…") '
            "and start the dashboard with --storage to watch runs live; finished runs of "
            "every store are under Run analysis."
        )
        return
    store = _store(url)
    runs = _loop().run(store.live_runs())
    if not runs:
        st.write(f"No run is under way in {url.split('@')[-1]}. Start one and it appears here.")
        time.sleep(REFRESH_S)
        st.rerun()
    labels = {
        rid: f"{info.get('name', '?')} · {info.get('tasks', '?')} tasks · {rid}"
        for rid, info in sorted(runs.items(), key=lambda kv: -float(kv[1].get("started", 0)))
    }
    run_id = st.selectbox("Run", list(labels), format_func=labels.__getitem__, key="live_run")
    if run_id is None:
        return
    shape_json = _loop().run(store.run_shape(run_id))
    if shape_json is None:
        st.write("This run just ended: see Run analysis.")
        return
    _live_run(store, run_id, Shape.from_json(shape_json), runs[run_id])


def _live_run(store: Store, run_id: str, shape: Shape, info: dict[str, Any]) -> None:
    key = f"live:{run_id}"
    if key not in st.session_state:
        run = LiveRun(shape, predicted_makespan_s=info.get("predicted_makespan_s"))
        st.session_state[key] = {"run": run, "cursor": None}
    unfold = len(shape.deps) <= FOLD_ABOVE or st.checkbox(
        f"Show every task ({len(shape.deps):,}; folded by function above {FOLD_ABOVE:,})"
    )

    @st.fragment(run_every=REFRESH_S)
    def tail() -> None:
        state = st.session_state[key]
        events, state["cursor"] = _loop().run(store.read_events(run_id, state["cursor"], 0))
        run: LiveRun = state["run"]
        run.add(events)
        if not events and (state.get("ended") or _loop().run(store.run_shape(run_id)) is None):
            state["ended"] = True  # its client deleted it: the last events may be unread
            _ended(run_id)
        states = run.states()
        done = sum(s.value == "done" for s in states)
        now = run.last_time if state.get("ended") and run.last_time else time.time()
        cols = st.columns(5)
        cols[0].metric("Tasks done", f"{done:,} / {len(states):,}")
        workers = run.workers_warm + run.workers_cold
        cols[1].metric("Workers", f"{workers} ({run.workers_cold} cold)")
        cols[2].metric("Data moved", _bytes(run.bytes_moved))
        cols[3].metric("Elapsed", f"{run.elapsed_s(now):.1f} s")
        elapsed, predicted = run.elapsed_s(now), run.predicted_makespan_s
        cols[4].metric("Predicted finish", _finish(elapsed, predicted))
        grown = run.shape  # with the tasks maps made so far
        if unfold:
            colours = [figures.STATE_COLOURS[s] for s in states]
            hover = [f"{grown.name(t)}: {s.value}" for t, s in enumerate(states)]
            fig = figures.graph_figure(grown, colours, hover, moved=run.moved)
        else:
            fig = figures.folded_figure(*fold_by_function(grown, states))
        st.plotly_chart(fig, config=figures.CONFIG, key=f"graph:{run_id}")
        st.markdown(
            f"<span data-testid='shoal-live-states'>{_counts(states)}</span>",
            unsafe_allow_html=True,
        )

    tail()


def _ended(run_id: str) -> None:
    """Say how the run ended, from its record (its last events went with its keys)."""
    history = _history()
    try:
        record = history.run(run_id)
    finally:
        history.close()
    if record is None:
        st.success(f"Run {run_id} ended: its analysis is under Run analysis.")
    elif record.ok:
        st.success(
            f"Run {run_id} ended: {record.tasks_done:,} of {record.tasks_total:,} tasks done, "
            f"makespan {record.makespan_s:.3f} s. Its analysis is under Run analysis."
        )
    else:
        st.error(f"Run {run_id} failed: {record.error}. Its analysis is under Run analysis.")


def _finish(elapsed: float, predicted: float | None) -> str:
    """When the plan says the run ends, from now."""
    if predicted is None:
        return "unplanned"
    if elapsed <= predicted:
        return f"in {predicted - elapsed:.1f} s"
    return f"{elapsed - predicted:.1f} s late"


def _counts(states: list[State]) -> str:
    """How many tasks are in each state, each in its colour."""
    counts: dict[State, int] = {}
    for s in states:
        counts[s] = counts.get(s, 0) + 1
    return " · ".join(
        f"<span style='color:{figures.STATE_COLOURS[s]}'>●</span> {s.value} {counts.get(s, 0)}"
        for s in STATE_ORDER
    )


# --------------------------------------------------------------------------- analysis


def analysis_view() -> None:
    st.header("Run analysis")
    history = _history()
    try:
        records = history.runs(limit=200)
    finally:
        history.close()
    if not records:
        st.write("The history holds no run yet: run a workflow, then look here.")
        return
    by_id = {r.run_id: r for r in records}
    chosen = st.selectbox(
        "Run",
        list(by_id),
        format_func=lambda rid: _run_label(by_id[rid]),
        key="analysis_run",
    )
    record = by_id[chosen]
    _analysis(record)


def _run_label(r: RunRecord) -> str:
    when = datetime.fromtimestamp(r.started).strftime("%Y-%m-%d %H:%M:%S")
    status = "ok" if r.ok else "failed"
    return (
        f"{when} · {r.name} · {r.tasks_total} tasks · {r.makespan_s:.2f} s · {status} · {r.run_id}"
    )


def _analysis(record: RunRecord) -> None:
    shape = Shape.of_record(record)
    tasks = record.tasks
    ends = [t.end for t in tasks]
    path = critical_path(shape.deps, ends)
    cols = st.columns(5)
    cols[0].metric(
        "Makespan", f"{record.makespan_s:.3f} s", help="First task start to last task end"
    )
    cols[1].metric("Wall time", f"{record.wall_s:.3f} s", help="The whole compute() call")
    if record.predicted_makespan_s is not None and record.prediction_error is not None:
        cols[2].metric(
            "Planned",
            f"{record.predicted_makespan_s:.3f} s",
            f"{record.prediction_error:+.0%}",
            delta_color="off",
        )
    else:
        cols[2].metric("Planned", "unplanned")
    cost = record.cost
    cols[3].metric(
        "Cost",
        f"${cost.usd:.6f}",
        help=f"{cost.gb_s:.3f} GB-s and {cost.vcpu_s:.3f} vCPU-s in {cost.requests} "
        "invocations, at AWS Lambda's x86 prices",
    )
    cols[4].metric("Workers", f"{record.workers} ({record.cold_starts} cold)")
    colour_by = st.radio(
        "Colour tasks by", ("duration", "planned vs real"), horizontal=True, key="colour_by"
    )
    rows = planned_vs_real(record)
    error = {r.task: r.error for r in rows}
    colours, hover = [], []
    longest = (
        max(
            [(t.end - t.start) for t in tasks if t.start is not None and t.end is not None],
            default=1.0,
        )
        or 1.0
    )
    for t in tasks:
        seconds = (t.end - t.start) if t.start is not None and t.end is not None else 0.0
        if colour_by == "duration":
            colours.append(_shade(seconds / longest))
        else:
            colours.append(_diverging(error.get(t.task)))
        note = f"{t.name}: {seconds:.3f} s on {t.worker or '?'}"
        if t.task in error:
            note += f", planned {error[t.task]:+.0%}"
        hover.append(note)
    st.subheader("Graph (critical path in red)")
    if len(tasks) <= FOLD_ABOVE or st.checkbox("Show every task", key="analysis_unfold"):
        fig = figures.graph_figure(
            shape,
            colours,
            hover,
            highlight=set(path),
            moved={t.task: t.stored_bytes for t in tasks if t.stored_bytes},
        )
    else:
        fig = figures.folded_figure(*fold_by_function(shape, [State.DONE] * len(tasks)))
    st.plotly_chart(fig, config=figures.CONFIG, key="analysis_graph")
    st.caption(
        "Critical path: "
        + " → ".join(shape.name(t) for t in path[:20])
        + (" → …" if len(path) > 20 else "")
    )
    st.subheader("Timeline")
    st.plotly_chart(
        figures.timeline_figure(timeline(record), set(path)),
        config=figures.CONFIG,
        key="analysis_timeline",
    )
    left, right = st.columns(2)
    with left:
        st.subheader("Where the time went")
        st.plotly_chart(
            figures.split_figure(where_the_time_went(record)),
            config=figures.CONFIG,
            key="analysis_split",
        )
    with right:
        st.subheader("Planned vs real")
        if rows:
            st.plotly_chart(
                figures.planned_figure(rows), config=figures.CONFIG, key="analysis_planned"
            )
        else:
            st.write("This run was not planned (planner none): nothing to compare.")
    if rows:
        st.dataframe(
            [
                {
                    "task": r.name,
                    "planned s": round(r.predicted_s, 4),
                    "real s": round(r.real_s, 4),
                    "off by s": round(r.predicted_s - r.real_s, 4),
                    "error %": round(100 * r.error, 1),  # a number: the column sorts
                }
                for r in rows
            ],
            hide_index=True,
            key="planned_table",
        )


def _shade(x: float) -> str:
    """Light to dark green, by a fraction."""
    x = min(1.0, max(0.0, x))
    g = int(220 - 130 * x)
    return f"rgb({int(200 - 160 * x)},{g},{int(200 - 130 * x)})"


def _diverging(error: float | None) -> str:
    if error is None:
        return figures.STATE_COLOURS[State.WAITING]
    x = max(-1.0, min(1.0, error))
    if x >= 0:  # predicted too long: blue
        return f"rgb({int(230 - 150 * x)},{int(230 - 100 * x)},230)"
    return f"rgb(230,{int(230 + 150 * x)},{int(230 + 150 * x)})"  # too short: red


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


# --------------------------------------------------------------------------- history


def history_view() -> None:
    st.header("History")
    history = _history()
    try:
        workflows = history.workflows()
        if not workflows:
            st.write("The history holds no run yet.")
            return
        names = {  # the most recently run first
            w.workflow: f"{w.name} ({w.workflow[:8]}, {w.runs} runs)"
            for w in sorted(workflows, key=lambda w: -w.last_started)
        }
        chosen = st.selectbox(
            "Workflow", list(names), format_func=names.__getitem__, key="history_workflow"
        )
        records = history.runs(workflow=chosen, limit=1000)
    finally:
        history.close()
    rows = history_rows(records)
    st.caption(f"{len(rows)} runs, newest first (the newest: {rows[0]['run']})")
    series: dict[str, dict[str, Any]] = {}
    for r in sorted(rows, key=lambda r: r["started"]):
        label = f"{r['planner']} / {r['sla']}"
        s = series.setdefault(label, {"started": [], "makespan_s": [], "cost_usd": [], "error": []})
        s["started"].append(datetime.fromtimestamp(r["started"]))
        s["makespan_s"].append(r["makespan_s"])
        s["cost_usd"].append(r["cost_usd"])
        s["error"].append(r["error"])
    import plotly.graph_objects as go

    cols = st.columns(3)
    for col, (field, title) in zip(
        cols,
        (("makespan_s", "Makespan (s)"), ("cost_usd", "Cost ($)"), ("error", "Prediction error")),
        strict=True,
    ):
        fig = go.Figure(
            [
                go.Scatter(x=s["started"], y=s[field], mode="lines+markers", name=label)
                for label, s in series.items()
            ]
        )
        fig.update_layout(
            height=340,
            title=title,
            margin={"l": 10, "r": 10, "t": 40, "b": 10},
            legend={"orientation": "h", "y": -0.3, "yanchor": "top"},
        )
        col.plotly_chart(fig, config=figures.CONFIG, key=f"history_{field}")
    st.dataframe(
        [
            {
                "run": r["run"],
                "started": datetime.fromtimestamp(r["started"]).strftime("%Y-%m-%d %H:%M:%S"),
                "ok": r["ok"],
                "tasks": r["tasks"],
                "makespan s": round(r["makespan_s"], 3),
                "wall s": round(r["wall_s"], 3),
                "planned s": None if r["predicted_s"] is None else round(r["predicted_s"], 3),
                "error": None if r["error"] is None else f"{r['error']:+.1%}",
                "cost $": round(r["cost_usd"], 6),
                "planner": r["planner"],
                "sla": r["sla"],
            }
            for r in rows
        ],
        hide_index=True,
        key="history_table",
    )
    if len(records) >= 2:
        st.subheader("Compare two runs")
        ids = [r.run_id for r in records]
        by_id = {r.run_id: r for r in records}
        left, right = st.columns(2)
        a = left.selectbox("Run A", ids, index=1, key="compare_a")
        b = right.selectbox("Run B", ids, index=0, key="compare_b")
        st.table(_comparison(by_id[a], by_id[b]))


def _comparison(a: RunRecord, b: RunRecord) -> dict[str, dict[str, str]]:
    def figures_of(r: RunRecord) -> dict[str, str]:
        return {
            "makespan s": f"{r.makespan_s:.3f}",
            "wall s": f"{r.wall_s:.3f}",
            "planned s": "–" if r.predicted_makespan_s is None else f"{r.predicted_makespan_s:.3f}",
            "workers": f"{r.workers} ({r.cold_starts} cold)",
            "GB-s": f"{r.cost.gb_s:.3f}",
            "cost $": f"{r.cost.usd:.6f}",
            "planner": f"{r.planner} / {r.sla}",
            "ok": "yes" if r.ok else "no",
        }

    return {f"A {a.run_id}": figures_of(a), f"B {b.run_id}": figures_of(b)}


main()
