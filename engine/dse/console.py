"""Turning results into text and JSON for people and scripts; no logic, only presentation."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from .routing.selector import Ranked
from .workflow import Plan, RunResult, StepResult

_MARKS = {"running": "..", "done": "ok", "skipped": "--", "failed": "XX"}


def step_line(result: StepResult) -> str:
    """One progress line per step event: status, where it ran, tokens, time."""
    parts = [f"[{_MARKS.get(result.status, '  ')}] {result.id:<14} {result.status:<8}"]
    if result.kind == "llm" and result.backend:
        parts.append(f"{result.backend}/{result.model}" + (f" @ {result.endpoint}" if result.endpoint else ""))
    elif result.kind != "llm":
        parts.append(result.kind)
    if result.status in ("done", "failed"):
        if result.kind == "llm":
            parts.append(f"tokens {result.prompt_tokens}+{result.completion_tokens}")
        parts.append(f"{result.seconds:.2f}s")
        if result.attempts > 1:
            parts.append(f"attempts {result.attempts}")
    if result.error and result.status != "running":
        parts.append(f"- {result.error}")
    return "  ".join(parts)


def run_text(result: RunResult, calls: dict[str, dict[str, int]]) -> str:
    lines = [f"workflow {result.workflow}: {result.status} in {result.seconds:.2f}s"]
    for backend, per_endpoint in calls.items():
        spread = ", ".join(f"{url} x{n}" for url, n in per_endpoint.items())
        lines.append(f"calls on {backend}: {spread}")
    for name, value in result.outputs.items():
        lines.append(f"\n== {name} ==\n{value}")
    return "\n".join(lines)


def run_json(result: RunResult, calls: dict[str, dict[str, int]]) -> str:
    document = {
        "workflow": result.workflow,
        "status": result.status,
        "seconds": round(result.seconds, 3),
        "steps": [asdict(r) for r in result.steps.values()],
        "outputs": result.outputs,
        "calls_per_endpoint": calls,
    }
    return json.dumps(document, indent=2, default=str)


def plan_rows(plan: Plan) -> list[dict[str, Any]]:
    rows = []
    for step_id in plan.order:
        planned = plan.steps[step_id]
        row: dict[str, Any] = {"step": step_id, "kind": planned.step.kind, "tool": planned.step.tool}
        if planned.resolution:
            target = planned.resolution.target
            row.update(
                backend=target.backend,
                model=target.model,
                deployment=target.deployment,
                role=target.role,
                endpoints=list(target.endpoints),
                rule=target.rule,
                reasons=list(target.reasons),
                fallbacks=list(target.fallbacks),
                directive=planned.resolution.directive.phrase if planned.resolution.directive else None,
            )
        row["needs"] = sorted(plan.graph.predecessors(step_id))
        rows.append(row)
    return rows


def plan_text(plan: Plan, *, verbose: bool = False) -> str:
    rows = plan_rows(plan)
    headers = ["step", "tool", "backend", "model", "endpoints", "rule"]
    table = [
        [
            r["step"],
            r["tool"] or ("(run)" if r["kind"] == "run" else "-"),
            r.get("backend", "-"),
            r.get("model", "-"),
            ", ".join(r.get("endpoints", [])) or ("managed" if r.get("backend") else "-"),
            r.get("rule", "-"),
        ]
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *table)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in table]
    if verbose:
        for r in rows:
            for reason in r.get("reasons", []):
                out.append(f"  {r['step']}: {reason}")
    return "\n".join(line.rstrip() for line in out)


def selection_data(ranked: list[Ranked], rejected: list[Ranked]) -> dict[str, Any]:
    def row(r: Ranked) -> dict[str, Any]:
        return {
            "backend": r.candidate.backend,
            "model": r.candidate.model,
            "score": round(r.score, 2),
            "breakdown": {k: round(v, 2) for k, v in r.breakdown.items()},
            "context_window": r.info.context_window,
            "known": r.info.known,
        }

    return {
        "ranked": [row(r) for r in ranked],
        "rejected": [{"backend": r.candidate.backend, "model": r.candidate.model, "reason": r.rejected} for r in rejected],
    }


def selection_text(ranked: list[Ranked], rejected: list[Ranked]) -> str:
    if not ranked:
        lines = ["no candidate passes the constraints"]
    else:
        lines = []
        for i, r in enumerate(ranked, 1):
            parts = ", ".join(f"{k} {v:.1f}" for k, v in r.breakdown.items())
            guess = "" if r.info.known else "  (not in the catalog: estimated from the name)"
            lines.append(f"{i}. {r.candidate.backend}:{r.candidate.model}  score {r.score:.1f}  ({parts}){guess}")
    lines += [f"   not considered: {r.candidate.backend}:{r.candidate.model}: {r.rejected}" for r in rejected]
    return "\n".join(lines)
