"""The step graph laid out for an SVG drawing: columns by dependency depth, left to right, as `dse graph` reads.

Drawn by hand rather than by Mermaid or Graphviz so that the report needs no network and no
program besides a browser: a step's column is the longest chain of steps it waits for, and
within a column steps sit near the steps they need (one barycenter pass), so most edges run
straight across.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

NODE_HEIGHT, COLUMN_GAP, ROW_GAP, PAD = 46, 64, 18, 12
_CHAR = 7.4  # px per character of the node font (12px monospace)
_MIN_WIDTH, _MAX_CHARS = 120, 30


@dataclass(frozen=True)
class GraphStep:
    """A step as the report knows it: its id, what it is (`tool` or kind), its state, and the steps it needs."""

    id: str
    what: str
    state: str
    needs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Node:
    step: GraphStep
    x: float
    y: float
    width: float
    height: float = NODE_HEIGHT

    @property
    def title(self) -> str:
        """The id cut to fit the box; the full id is in the node's tooltip."""
        return fit(self.step.id, _MAX_CHARS)

    @property
    def subtitle(self) -> str:
        return fit(subtitle(self.step), _MAX_CHARS)


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    path: str
    """An SVG path: a curve from the middle of the source's right side to the middle of the target's left side."""


@dataclass(frozen=True)
class GraphLayout:
    nodes: list[Node]
    edges: list[Edge]
    width: float
    height: float


def fit(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"


def subtitle(step: GraphStep) -> str:
    return f"{step.what} · {step.state}"


def layout(steps: Sequence[GraphStep]) -> GraphLayout:
    """Place `steps` (given in a topological order, as the plan runs them); a need that names no earlier step draws no edge."""
    column: dict[str, int] = {}
    for step in steps:
        column[step.id] = 1 + max((column[need] for need in step.needs if need in column), default=-1)
    columns: list[list[GraphStep]] = [[] for _ in range(max(column.values(), default=-1) + 1)]
    row: dict[str, float] = {}
    for step in steps:
        columns[column[step.id]].append(step)
    for members in columns:
        members.sort(key=lambda s: _barycenter(s, row))  # stable: the plan's order among equals
        row.update((s.id, float(i)) for i, s in enumerate(members))
    chars = max((max(len(s.id), len(subtitle(s))) for s in steps), default=0)
    width = max(min(chars, _MAX_CHARS) * _CHAR + 20, _MIN_WIDTH)
    tallest = max((len(members) for members in columns), default=0)
    nodes: dict[str, Node] = {}
    for number, members in enumerate(columns):
        offset = (tallest - len(members)) * (NODE_HEIGHT + ROW_GAP) / 2
        for i, step in enumerate(members):
            x = PAD + number * (width + COLUMN_GAP)
            nodes[step.id] = Node(step, x, PAD + offset + i * (NODE_HEIGHT + ROW_GAP), width)
    edges = [
        Edge(need, step.id, _curve(nodes[need], nodes[step.id]))
        for step in steps
        for need in step.needs
        if need in nodes and column[need] < column[step.id]
    ]
    total_width = PAD * 2 + len(columns) * width + max(len(columns) - 1, 0) * COLUMN_GAP
    total_height = PAD * 2 + tallest * NODE_HEIGHT + max(tallest - 1, 0) * ROW_GAP
    return GraphLayout(list(nodes.values()), edges, total_width, total_height)


def _barycenter(step: GraphStep, row: dict[str, float]) -> float:
    placed = [row[need] for need in step.needs if need in row]
    return sum(placed) / len(placed) if placed else 0.0


def _curve(source: Node, target: Node) -> str:
    x1, y1 = source.x + source.width, source.y + source.height / 2
    x2, y2 = target.x - 6, target.y + target.height / 2  # the arrowhead ends at the box
    bend = (x2 - x1) / 2
    return f"M{x1:.1f},{y1:.1f} C{x1 + bend:.1f},{y1:.1f} {x2 - bend:.1f},{y2:.1f} {x2:.1f},{y2:.1f}"
