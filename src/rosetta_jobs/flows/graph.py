"""A flow graph as the editor saves it, read and checked before anything is compiled.

The envelope is ``{"nodes": [...], "edges": [...]}`` (``../shared/spec/rosetta-tasks.md`` 1.2). The
checks give each problem its own message (defect F6): duplicate ids, edges without ends, edges from
nodes that do not exist, self-loops and cycles (naming the nodes on it). The order is deterministic
(F5): Kahn's algorithm, ready nodes taken in node-list order. A node's inputs follow the editor's
handles where it has them (F2): a join's ``left``/``right``, a union's ``input_a``/``input_b``; edge
order only decides among inputs without a handle.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["NODE_TYPES", "Edge", "Graph", "GraphError", "Node", "NodeError"]

#: Every node type the editor offers; ``note`` is an annotation and produces nothing.
NODE_TYPES = ("input", "clean", "aggregate", "join", "union", "pivot", "new_rows", "sql", "output", "note")
#: Node types that produce rows (a CTE or a temp table).
_PRODUCERS = frozenset(NODE_TYPES) - {"output", "note"}
#: The target handles whose order means something, in that order.
_HANDLES = {"join": ("left", "right"), "union": ("input_a", "input_b")}


class GraphError(ValueError):
    """The graph as a whole cannot be compiled (a cycle, duplicate ids, a broken edge)."""


class NodeError(ValueError):
    """One node is misconfigured; other branches of the graph are not affected."""

    def __init__(self, node_id: str, message: str) -> None:
        super().__init__(message)
        self.node_id = node_id


@dataclass(frozen=True)
class Node:
    """One node: its id, type, ``data`` and its position in the node list."""

    id: str
    type: str
    data: Mapping[str, Any] = field(repr=False)
    position: int
    label: str | None = None

    @property
    def title(self) -> str:
        """How the UI names the node: its label, else its type."""
        text = self.label or self.data.get("label")
        return str(text) if text else self.type

    @property
    def produces(self) -> bool:
        return self.type in _PRODUCERS


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    target_handle: str | None = None
    id: str | None = None


class Graph:
    """Nodes and edges, checked; upstream lists, topological order and trimming."""

    def __init__(self, nodes: Sequence[Node], edges: Sequence[Edge]) -> None:
        self.nodes = tuple(nodes)
        self.edges = tuple(edges)
        self._by_id = {node.id: node for node in self.nodes}
        self._incoming: dict[str, list[Edge]] = {node.id: [] for node in self.nodes}
        self._outgoing: dict[str, list[Edge]] = {node.id: [] for node in self.nodes}
        for edge in self.edges:
            self._incoming[edge.target].append(edge)
            self._outgoing[edge.source].append(edge)

    # --- reading ------------------------------------------------------------------------------------
    @classmethod
    def parse(cls, graph: Mapping[str, Any] | None = None, *, nodes: Any = None, edges: Any = None) -> Graph:
        """The graph of ``{"nodes", "edges"}`` (or the two lists), or ``GraphError`` saying what is wrong."""
        if graph is not None:
            if not isinstance(graph, Mapping):
                raise GraphError(f"A flow graph is an object with nodes and edges, not {type(graph).__name__}")
            nodes, edges = graph.get("nodes"), graph.get("edges")
        raw_nodes = _list(nodes, "nodes")
        raw_edges = _list(edges, "edges")
        if not raw_nodes:
            raise GraphError("Graph is empty — no nodes to compile")
        parsed = [_node(raw, index) for index, raw in enumerate(raw_nodes)]
        seen: set[str] = set()
        for node in parsed:
            if node.id in seen:
                raise GraphError(f"Two nodes have the id '{node.id}': node ids must be unique")
            seen.add(node.id)
        kept = [edge for index, raw in enumerate(raw_edges) if (edge := _edge(raw, index, seen)) is not None]
        return cls(parsed, kept)

    def node(self, node_id: str) -> Node:
        try:
            return self._by_id[node_id]
        except KeyError:
            raise GraphError(f"Node '{node_id}' not found in graph") from None

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._by_id

    def upstream(self, node_id: str) -> list[Node]:
        """The nodes feeding ``node_id`` that produce rows, in input order (handles first, then edge order)."""
        node = self.node(node_id)
        incoming = [edge for edge in self._incoming[node_id] if self._by_id[edge.source].produces]
        handles = _HANDLES.get(node.type)
        if handles:
            placed = [next((e for e in incoming if e.target_handle == h), None) for h in handles]
            rest = iter(e for e in incoming if e.target_handle not in handles)
            ordered = [edge if edge is not None else next(rest, None) for edge in placed]
            incoming = [e for e in ordered if e is not None] + list(rest)
        return [self._by_id[edge.source] for edge in incoming]

    def downstream(self, node_id: str) -> list[Node]:
        return [self._by_id[edge.target] for edge in self._outgoing[node_id]]

    # --- order and subgraphs --------------------------------------------------------------------------
    def order(self) -> list[Node]:
        """Every node in topological order, ready nodes in node-list order; ``GraphError`` on a cycle."""
        degree = {node.id: len(self._incoming[node.id]) for node in self.nodes}
        ready = [(node.position, node.id) for node in self.nodes if degree[node.id] == 0]
        heapq.heapify(ready)
        ordered: list[Node] = []
        while ready:
            _, node_id = heapq.heappop(ready)
            ordered.append(self._by_id[node_id])
            for edge in self._outgoing[node_id]:
                degree[edge.target] -= 1
                if degree[edge.target] == 0:
                    heapq.heappush(ready, (self._by_id[edge.target].position, edge.target))
        if len(ordered) < len(self.nodes):
            stuck = [node.id for node in self.nodes if degree[node.id] > 0]
            raise GraphError(
                f"Graph contains a cycle — cannot compile. Nodes on or after the cycle: {', '.join(stuck)}"
            )
        return ordered

    def ancestors(self, node_ids: Iterable[str]) -> set[str]:
        """``node_ids`` and every node upstream of them."""
        found: set[str] = set()
        stack = [self.node(node_id).id for node_id in node_ids]
        while stack:
            current = stack.pop()
            if current in found:
                continue
            found.add(current)
            stack.extend(edge.source for edge in self._incoming[current])
        return found

    def descendants(self, node_id: str) -> set[str]:
        """Every node downstream of ``node_id`` (not itself)."""
        found: set[str] = set()
        stack = [edge.target for edge in self._outgoing[node_id]]
        while stack:
            current = stack.pop()
            if current not in found:
                found.add(current)
                stack.extend(edge.target for edge in self._outgoing[current])
        return found

    def trimmed(self, target: str) -> Graph:
        """The target and its ancestors only: what a preview or a schema needs (spec 4.1 step 2)."""
        keep = self.ancestors([target])
        return Graph(
            [node for node in self.nodes if node.id in keep],
            [edge for edge in self.edges if edge.source in keep and edge.target in keep],
        )

    def with_data(self, node_id: str, **changes: Any) -> Graph:
        """A copy where ``node_id``'s data has ``changes`` (the preview injects sample limits this way)."""
        nodes = [
            Node(n.id, n.type, {**n.data, **changes}, n.position, n.label) if n.id == node_id else n for n in self.nodes
        ]
        return Graph(nodes, self.edges)


def _list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise GraphError(f"The graph's {what} must be a list, not {type(value).__name__}")
    return list(value)


def _node(raw: Any, index: int) -> Node:
    if not isinstance(raw, Mapping):
        raise GraphError(f"Node #{index + 1} is not an object")
    node_id = raw.get("id")
    if isinstance(node_id, bool) or not isinstance(node_id, str | int) or str(node_id) == "":
        raise GraphError(f"Node #{index + 1} has no id")
    node_id = str(node_id)
    kind = raw.get("type")
    if kind not in NODE_TYPES:
        shown = "" if kind is None else kind
        valid = sorted(t for t in NODE_TYPES if t != "note")
        raise GraphError(f"Unknown node type '{shown}' on node {node_id}. Valid types: {valid}")
    data = raw.get("data")
    if data is not None and not isinstance(data, Mapping):
        raise GraphError(f"Node {node_id}: its data must be an object, not {type(data).__name__}")
    label = raw.get("label")
    return Node(node_id, str(kind), dict(data or {}), index, str(label) if label else None)


def _edge(raw: Any, index: int, nodes: set[str]) -> Edge | None:
    if not isinstance(raw, Mapping):
        raise GraphError(f"Edge #{index + 1} is not an object")
    name = str(raw.get("id") or f"#{index + 1}")
    ends = []
    for end in ("source", "target"):
        value = raw.get(end)
        if isinstance(value, bool) or not isinstance(value, str | int) or str(value) == "":
            raise GraphError(f"Edge {name} has no {end}")
        ends.append(str(value))
    source, target = ends
    if source not in nodes:
        raise GraphError(f"Edge {name} comes from node '{source}', which is not in the graph")
    if target not in nodes:
        return None  # the original ignored edges to nowhere; a stored graph with one keeps working
    if source == target:
        raise GraphError(f"Edge {name} connects node '{source}' to itself")
    handle = raw.get("targetHandle")
    return Edge(source, target, handle if isinstance(handle, str) and handle else None, name)
