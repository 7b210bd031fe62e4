"""The dashboard's Plotly figures, from the plain data of :mod:`.fold`. One graph
component serves the live view and the run analysis, with the same layout and the same
configuration: tasks in layers by depth (a task sits one layer right of its deepest input),
edges as one trace, nodes as one WebGL trace above a few hundred tasks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go

from .fold import Bar, FoldedNode, PlannedVsReal, Shape, State, depths

STATE_COLOURS = {
    State.WAITING: "#c8ccd2",
    State.READY: "#7fb3e6",
    State.RUNNING: "#f2a33a",
    State.RETRIED: "#a56ad8",
    State.DONE: "#3fa36b",
    State.FAILED: "#d64545",
}
PHASE_COLOURS = {"start": "#9aa0a6", "read": "#7fb3e6", "run": "#3fa36b", "upload": "#f2a33a"}
#: Above this many tasks, nodes are drawn with WebGL.
WEBGL_ABOVE = 500
#: Up to this many tasks, each node is labelled with its task's name.
LABELS_UP_TO = 40
#: Above this many edges, only the critical path's are drawn: thousands of lines are a
#: blur on screen, and most of what the browser redraws on every refresh of the live view.
EDGES_UP_TO = 1500
#: The figure's own config (no Plotly logo; static when printed).
CONFIG = {"displaylogo": False}


def layout(deps: Sequence[Sequence[int]]) -> tuple[list[float], list[float]]:
    """Each task's position: x its layer, y its place in the layer (centred)."""
    layer = depths(deps)
    count: dict[int, int] = {}
    for x in layer:
        count[x] = count.get(x, 0) + 1
    seen: dict[int, int] = {}
    ys = []
    for x in layer:
        k = seen.get(x, 0)
        seen[x] = k + 1
        ys.append(k - (count[x] - 1) / 2)
    return [float(x) for x in layer], ys


def graph_figure(
    shape: Shape,
    colours: Sequence[str],
    hover: Sequence[str],
    highlight: set[int] | None = None,
    moved: dict[int, int] | None = None,
    height: int = 520,
) -> dict[str, Any]:
    """The task graph: a node per task in ``colours``, with ``hover`` text; edges of
    ``highlight`` (the critical path) drawn bold, edges out of outputs that went through the
    store (``moved``: bytes per task) drawn solid, the others faint. A plain figure
    (a dict): Plotly's validating objects cost a tenth of a second at 2 000 tasks, on every
    refresh of the live view."""
    xs, ys = layout(shape.deps)
    highlight = highlight or set()
    moved = moved or {}
    styles = {"local": (0.6, "#d5d8dc"), "moved": (1.2, "#8a9099"), "path": (3.0, "#d64545")}
    lines: dict[str, tuple[list[float | None], list[float | None]]] = {k: ([], []) for k in styles}
    many = sum(map(len, shape.deps)) > EDGES_UP_TO
    for task, deps in enumerate(shape.deps):
        if many and task not in highlight:  # only the critical path's: the rest is a blur
            continue
        for d in deps:
            if d in highlight and task in highlight:
                ex, ey = lines["path"]
            else:
                ex, ey = lines["moved" if d in moved else "local"]
            ex += (xs[d], xs[task], None)
            ey += (ys[d], ys[task], None)
    traces: list[dict[str, Any]] = [
        {"type": "scatter", "x": ex, "y": ey, "mode": "lines", "hoverinfo": "skip",
         "showlegend": False, "line": {"width": styles[kind][0], "color": styles[kind][1]}}
        for kind, (ex, ey) in lines.items()
        if ex
    ]  # fmt: skip
    n = len(xs)
    labelled = n <= LABELS_UP_TO
    node: dict[str, Any] = {
        "type": "scattergl" if n > WEBGL_ABOVE else "scatter",
        "x": xs,
        "y": ys,
        "mode": "markers+text" if labelled else "markers",
        "marker": {
            "color": list(colours),
            "size": 14 if n <= 200 else (8 if n <= 2000 else 5),
            "line": {"width": [2 if t in highlight else 0 for t in range(n)], "color": "#202124"},
        },
        "customdata": list(hover),
        "hovertemplate": "%{customdata}<extra></extra>",
        "showlegend": False,
    }
    if labelled:
        node["text"] = [shape.name(t) for t in range(n)]
        node["textposition"] = "top center"
    traces.append(node)
    return {"data": traces, "layout": _plain_layout(height)}


def folded_figure(
    nodes: Sequence[FoldedNode], edges: dict[tuple[int, int], int], height: int = 420
) -> go.Figure:
    """One node per function, sized by its tasks and coloured by how many are done; edges
    between functions as wide as the task edges they stand for."""
    deps: list[list[int]] = [[] for _ in nodes]
    for a, b in edges:
        if a != b and a < b:
            deps[b].append(a)
    xs, ys = layout(deps)
    traces: list[Any] = []
    heaviest = max(edges.values(), default=1)
    for (a, b), n in edges.items():
        if a != b:
            traces.append(
                go.Scatter(
                    x=[xs[a], xs[b]],
                    y=[ys[a], ys[b]],
                    mode="lines",
                    hoverinfo="skip",
                    showlegend=False,
                    line={"width": 1 + 6 * n / heaviest, "color": "#8a9099"},
                )
            )
    done = [n.states.get(State.DONE.value, 0) / max(1, n.tasks) for n in nodes]
    text = [
        f"{n.function}: {n.tasks} tasks<br>"
        + ", ".join(f"{k} {v}" for k, v in sorted(n.states.items()))
        for n in nodes
    ]
    traces.append(
        go.Scatter(
            x=xs,
            y=ys,
            mode="markers+text",
            text=[n.function for n in nodes],
            textposition="top center",
            hovertext=text,
            hovertemplate="%{hovertext}<extra></extra>",
            marker={
                "size": [12 + 4 * n.tasks**0.5 for n in nodes],
                "color": done,
                "colorscale": [[0, STATE_COLOURS[State.WAITING]], [1, STATE_COLOURS[State.DONE]]],
                "cmin": 0,
                "cmax": 1,
                "line": {"width": 1, "color": "#202124"},
            },
            showlegend=False,
        )
    )
    return _plain(go.Figure(traces), height)


def timeline_figure(bars: Sequence[Bar], critical: set[int]) -> go.Figure:
    """Each worker's timeline: cold starts, then each task's read, run and upload; the
    critical path's runs outlined."""
    fig = go.Figure()
    for kind, colour in PHASE_COLOURS.items():
        mine = [b for b in bars if b.kind == kind]
        if not mine:
            continue
        fig.add_trace(
            go.Bar(
                y=[b.worker for b in mine],
                x=[max(b.end - b.start, 1e-6) for b in mine],
                base=[b.start for b in mine],
                orientation="h",
                name=kind,
                marker={
                    "color": colour,
                    "line": {
                        "width": [2 if b.task in critical and kind == "run" else 0 for b in mine],
                        "color": "#d64545",
                    },
                },
                text=[b.name for b in mine],
                textposition="inside",
                insidetextanchor="start",
                hovertemplate="%{text}: %{base:.3f} s + %{x:.3f} s<extra>" + kind + "</extra>",
            )
        )
    workers = len({b.worker for b in bars})
    fig.update_layout(
        barmode="overlay",
        height=max(260, 22 * workers + 90),  # a row per worker
        uniformtext={"mode": "hide", "minsize": 8},  # names only where they fit
        xaxis_title="seconds from the first task",
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        legend={"orientation": "h"},
    )
    return fig


SPLIT_COLOURS = {"compute": "#3fa36b", "I/O": "#7fb3e6", "cold starts": "#9aa0a6",
                 "waiting": "#e0e3e7"}  # fmt: skip


def split_figure(split: dict[str, float], height: int = 360) -> go.Figure:
    """Worker-seconds by what they went to, one bar each, with its share."""
    total = sum(split.values()) or 1.0
    names = list(split)
    fig = go.Figure(
        go.Bar(
            x=[split[n] for n in names],
            y=names,
            orientation="h",
            marker={"color": [SPLIT_COLOURS.get(n, "#8a9099") for n in names]},
            text=[f"{split[n]:.3f} s ({split[n] / total:.0%})" for n in names],
            textposition="auto",
            hovertemplate="%{y}: %{x:.3f} worker-seconds<extra></extra>",
        )
    )
    fig.update_layout(
        height=height,
        xaxis_title="worker-seconds",
        yaxis={"autorange": "reversed"},
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
    )
    return fig


def planned_figure(rows: Sequence[PlannedVsReal], height: int = 360) -> go.Figure:
    """Each task's predicted against real duration (the diagonal: a perfect prediction)."""
    top = max([max(r.predicted_s, r.real_s) for r in rows], default=1.0)
    fig = go.Figure(
        [
            go.Scatter(
                x=[0, top],
                y=[0, top],
                mode="lines",
                hoverinfo="skip",
                showlegend=False,
                line={"dash": "dot", "color": "#8a9099"},
            ),
            go.Scatter(
                x=[r.real_s for r in rows],
                y=[r.predicted_s for r in rows],
                mode="markers",
                text=[r.name for r in rows],
                showlegend=False,
                hovertemplate="%{text}: real %{x:.3f} s, planned %{y:.3f} s<extra></extra>",
            ),
        ]
    )
    fig.update_layout(
        height=height,
        xaxis_title="real seconds",
        yaxis_title="planned seconds",
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
    )
    return fig


def _plain_layout(height: int) -> dict[str, Any]:
    return {
        "height": height,
        "margin": {"l": 10, "r": 10, "t": 10, "b": 10},
        "xaxis": {"visible": False},
        "yaxis": {"visible": False},
        "plot_bgcolor": "white",
        "hovermode": "closest",
    }


def _plain(fig: go.Figure, height: int) -> go.Figure:
    fig.update_layout(**_plain_layout(height))
    return fig
