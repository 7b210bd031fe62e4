"""The graph model: tasks and nodes (node.py), argument templates (template.py), the built
graph (build.py) and its shipped, partitioned form (spec.py)."""

from .build import Graph, build
from .node import Node, TaskFunction, TaskOptions, task
from .spec import PAGE, EncodedGraph, ShippedGraph, TaskSpec, pages_of

__all__ = [
    "PAGE",
    "EncodedGraph",
    "Graph",
    "Node",
    "ShippedGraph",
    "TaskFunction",
    "TaskOptions",
    "TaskSpec",
    "build",
    "pages_of",
    "task",
]
