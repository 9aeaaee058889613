"""Turning results into text and JSON for people and scripts; no logic, only presentation."""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict
from typing import IO, TYPE_CHECKING, Any

from .workflow.journal import Spend
from .workflow.results import StepResult

if TYPE_CHECKING:
    import networkx as nx

    from .routing.selector import Ranked
    from .spend.cache import CacheStats
    from .status import BackendReport, BalanceReport
    from .workflow import Plan, RunResult, Workflow
    from .workflow.journal import RunJournal, RunRecord

_MARKS = {"waiting": "  ", "running": "..", "done": "ok", "skipped": "--", "failed": "XX"}
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Text from a model or a server with its control characters shown, not obeyed.

    On a terminal an escape sequence in an answer could clear the screen, retitle the window
    or draw a fake `[ok]` line over a failure; `\x1b` printed as text does none of that.
    """
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text.replace("\r\n", "\n"))


def step_line(result: StepResult) -> str:
    """One progress line per step event: status, where it ran, tokens, time."""
    parts = [f"[{_MARKS.get(result.status, '  ')}] {result.id:<14} {result.status:<8}"]
    if result.kind == "llm" and result.backend:
        parts.append(f"{result.backend}/{result.model}" + (f" @ {result.endpoint}" if result.endpoint else ""))
    if result.items_total is not None:
        parts.append(f"{result.items_done}/{result.items_total} items")
    elif result.kind != "llm":
        parts.append(result.kind)
    if result.status in ("done", "failed"):
        if result.kind == "llm":
            parts.append(f"tokens {result.prompt_tokens}+{result.completion_tokens}")
        if result.cost != 0:
            parts.append(money(result.cost))
        parts.append(f"{result.seconds:.2f}s")
        if result.first_token is not None:
            parts.append(f"first token {result.first_token:.2f}s")
        if result.calls > 1:
            parts.append(f"calls {result.calls}")
        if result.attempts > max(result.calls, 1):
            parts.append(f"attempts {result.attempts}")
        if result.cached_calls:
            parts.append("cached" if result.cached_calls >= result.calls else f"{result.cached_calls}/{result.calls} cached")
        if result.rate_waited > 0:
            parts.append(f"waited {result.rate_waited:.1f}s for rate limit")
        cut = truncation(result)
        if cut:
            parts.append(cut)
    if result.reused:
        parts.append("(reused from the resumed run)")
    if result.error and result.status != "running":
        parts.append(f"- {printable(result.error)}")
    return "  ".join(parts)


def money(cost: float | None) -> str:
    """USD as a person reads it: `$0.0012`; an unknown price says so, never `$0`."""
    if cost is None:
        return "price unknown"
    if cost == 0:
        return "$0"
    return f"${cost:.2f}" if cost >= 1 else f"${cost:.4f}" if cost >= 0.0001 else f"${cost:.6f}"


def cost_text(priced: float, unknown: bool) -> str:
    """A total's cost: what the priced calls cost, plus "price unknown" where some call has no price, never shown as $0."""
    if not unknown:
        return money(priced)
    return f"{money(priced)} + price unknown" if priced else "price unknown"


PRICE_HINT = "give a model with no known price one under `pricing:` in the config (USD per million tokens)"


def spend_line(spend: Spend) -> str:
    """A run's tokens, cost, calls the cache answered and rate-limit waits, on one line (and a hint for an unknown price)."""
    line = f"spent: {spend.prompt_tokens} input + {spend.completion_tokens} output tokens, {cost_text(spend.priced_cost, spend.cost is None)}"
    line += f"; {spend.calls} calls, {spend.cached_calls} answered by the cache"
    if spend.rate_waited > 0:
        line += f"; waited {spend.rate_waited:.1f}s for rate limits"
    return line + (f"\n  ({PRICE_HINT})" if spend.cost is None else "")


def truncation(result: StepResult) -> str | None:
    """What was cut short in a step, if anything: its answer at the token limit, inputs by a `truncate` filter."""
    notes = []
    if result.truncated:
        items = f" in {result.truncated_items} of {result.items_total} items" if result.items_total is not None else ""
        notes.append(f"TRUNCATED at max_tokens{items}")
    if result.truncated_inputs:
        notes.append(f"input cut by truncate: {', '.join(result.truncated_inputs)}")
    return "; ".join(notes) or None


def _waiting(plan: Plan, step_id: str) -> StepResult:
    """A row for a step that has not started: where it will run is already known from the plan."""
    planned = plan.steps[step_id]
    if planned.resolution is None:
        return StepResult(step_id, planned.step.kind)
    target = planned.resolution.target
    return StepResult(step_id, planned.step.kind, backend=target.backend, model=target.model)


class Progress:
    """Step progress on a terminal: a live table redrawn in place; plain lines when piped."""

    def __init__(self, plan: Plan, stream: IO[str]) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self.rows = {step_id: _waiting(plan, step_id) for step_id in plan.order}
        self.tails: dict[str, str] = {}
        self.drawn = 0
        self.mid_line = False

    def started(self, journal: RunJournal) -> None:
        self._write(f"run {journal.run_id}  (journal: {journal.directory})\n")

    def step(self, result: StepResult) -> None:
        self.rows[result.id] = result
        if self.live:
            self._redraw()
        elif result.status == "running" and result.items_done:
            return  # piped: one line when a fan-out starts and one when it ends, not one per item
        else:
            self._write(("\n" if self.mid_line else "") + step_line(result) + "\n")
            self.mid_line = False

    def chunk(self, step_id: str, text: str) -> None:
        text = printable(text)
        if self.live:
            self.tails[step_id] = (self.tails.get(step_id, "") + text).replace("\n", " ")[-60:]
            self._redraw()
        else:
            self._write(text)
            self.mid_line = True

    def close(self) -> None:
        if self.mid_line:
            self._write("\n")

    def _redraw(self) -> None:
        lines = []
        for step_id, row in self.rows.items():
            line = step_line(row)
            if row.status == "running" and step_id in self.tails:
                line += f"  | {self.tails[step_id]}"
            lines.append(line[:200])
        up = f"\x1b[{self.drawn}F" if self.drawn else ""
        self._write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
        self.drawn = len(lines)

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


def run_spend(result: RunResult) -> Spend:
    """What this invocation spent: a step reused from the run it resumes was paid for, and counted, there."""
    return Spend.of(step for step in result.steps.values() if not step.reused)


def run_text(result: RunResult, calls: dict[str, dict[str, int]]) -> str:
    lines = [f"workflow {result.workflow}: {result.status} in {result.seconds:.2f}s" + (f"  (run {result.run_id})" if result.run_id else "")]
    spend = run_spend(result)
    if spend.calls or spend.prompt_tokens or spend.completion_tokens:
        reused = sum(step.reused for step in result.steps.values())
        lines.append(spend_line(spend) + (f" - {reused} steps reused from the resumed run are not counted again" if reused else ""))
    lines += calls_lines(calls)
    lines += [f"step {step.id}: {cut}" for step in result.steps.values() if (cut := truncation(step))]
    for name, value in result.outputs.items():
        lines.append(f"\n== {name} ==\n{printable(str(value))}")
    return "\n".join(lines)


def calls_lines(calls: dict[str, dict[str, int]]) -> list[str]:
    """How the balancer spread a run's calls: one line per backend, each endpoint with its count."""
    return [f"calls on {backend}: " + ", ".join(f"{url} x{n}" for url, n in per_endpoint.items()) for backend, per_endpoint in calls.items()]


def run_json(result: RunResult, calls: dict[str, dict[str, int]]) -> str:
    document = {
        "run_id": result.run_id,
        "workflow": result.workflow,
        "status": result.status,
        "seconds": round(result.seconds, 3),
        "steps": [asdict(r) for r in result.steps.values()],
        "outputs": result.outputs,
        "calls_per_endpoint": calls,
        "spend": run_spend(result).as_dict(),
    }
    return json.dumps(document, indent=2, default=str)


def plan_rows(plan: Plan) -> list[dict[str, Any]]:
    rows = []
    for step_id in plan.order:
        planned = plan.steps[step_id]
        row: dict[str, Any] = {"step": step_id, "name": planned.step.name, "kind": planned.step.kind, "tool": planned.step.tool}
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


def plan_tools(plan: Plan) -> dict[str, dict[str, Any]]:
    """What each tool the plan calls sends and asks for: its name, system message, prompt template, tiers, bounds."""
    tools: dict[str, dict[str, Any]] = {}
    for step_id in plan.order:
        tool = plan.steps[step_id].tool
        if tool is None or tool.name in tools:
            continue
        details = {
            "name": tool.display_name,
            "system": tool.system,
            "prompt": tool.prompt,
            "tiers": dict(tool.tiers),
            "tags": list(tool.tags),
            "max_tokens": tool.max_tokens,
            "input_schema": tool.input_schema is not None,
            "output_schema": tool.output_schema is not None,
        }
        tools[tool.name] = {key: value for key, value in details.items() if value not in (None, {}, [], False)}
    return tools


def plan_text(plan: Plan, *, verbose: bool = False) -> str:
    rows = plan_rows(plan)
    shown = [
        {
            **r,
            "tool": r["tool"] or ("(run)" if r["kind"] == "run" else None),
            "endpoints": ", ".join(r.get("endpoints", [])) or ("managed" if r.get("backend") else None),
        }
        for r in rows
    ]
    workflow = plan.workflow
    out = [f"workflow {workflow.name}" + (f": {workflow.description}" if workflow.description else "")]
    for spec in workflow.inputs.values():
        default = f", default {spec.default!r}" if spec.default is not None else (", required" if spec.required else "")
        out.append(f"  input {spec.name} ({spec.type}{default})" + (f" - {spec.description}" if spec.description else ""))
    out.append("")
    out.append(table(shown, ["step", "tool", "backend", "model", "endpoints", "rule"]))
    named = [f"  {r['step']}: {r['name']}" for r in rows if r["name"]]
    if named:
        out += ["", "step names:", *named]
    tools = plan_tools(plan)
    if tools:
        out += ["", "tools:"]
        for name, details in tools.items():
            out.append(f"  {name}" + (f" ({details['name']})" if "name" in details else ""))
            if "tiers" in details:
                out.append("    tiers: " + ", ".join(f"{kind} {tier}" for kind, tier in details["tiers"].items()))
            for key in ("tags", "max_tokens"):
                if key in details:
                    out.append(f"    {key}: {cell_text(details[key])}")
            for key in ("system", "prompt"):
                if key in details:
                    out.append(f"    {key}: {_clip(details[key], 120)}")
            checks = [key for key in ("input_schema", "output_schema") if key in details]
            if checks:
                out.append(f"    checks: {', '.join(checks)}")
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


def runs_text(records: list[RunRecord]) -> str:
    if not records:
        return "no runs yet"
    lines = []
    for record in records:
        summary = record.summary()
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(summary["started"])) if summary["started"] else "-"
        steps = summary["problem"] or ", ".join(f"{n} {status}" for status, n in sorted(summary["steps"].items()))
        seconds = f"{summary['seconds']:.1f}s" if summary["seconds"] is not None else "-"
        spend = record.spend
        tokens = f"{spend.prompt_tokens}+{spend.completion_tokens}" if spend.calls or spend.prompt_tokens or spend.completion_tokens else "-"
        lines.append(
            f"{record.id}  {summary['workflow'] or '-':<16} {summary['status']:<18} {when}  {seconds:>8}  "
            f"tokens {tokens:<11} {cost_text(spend.priced_cost, spend.cost is None):>13}  {steps}"
        )
    return "\n".join(lines)


_SUMMED = ("attempts", "ok", "failed", "interrupted", "pending", "cached_calls", "input_tokens", "output_tokens", "cached_tokens", "priced_cost", "unpriced", "latency")


def usage_total(groups: list[dict[str, Any]]) -> dict[str, Any]:
    """The groups added up (they split the same rows); the cost is unknown when any group's is."""
    total: dict[str, Any] = {name: sum(group[name] for group in groups) for name in _SUMMED}
    total["cost"] = None if total["unpriced"] else total["priced_cost"]
    total["first_at"] = min((group["first_at"] for group in groups), default=None)
    total["last_at"] = max((group["last_at"] for group in groups), default=None)
    return total


def usage_cost(record: dict[str, Any]) -> str:
    return cost_text(record["priced_cost"], bool(record["unpriced"]))


def usage_text(groups: list[dict[str, Any]], by: list[str], where: str) -> str:
    """A table of the ledger's totals per group, then the total; `where` says which ledger and which calls."""
    if not groups:
        return f"no usage recorded {where}"
    counts = ["ok", "failed", *(name for name in ("interrupted", "pending") if any(group[name] for group in groups))]
    rows = [
        {
            **{name: group[name] for name in by},
            "calls": group["attempts"],
            **{name: group[name] for name in counts},
            "cached": group["cached_calls"],
            "input": group["input_tokens"],
            "output": group["output_tokens"],
            "cost": usage_cost(group),
        }
        for group in groups
    ]
    total = usage_total(groups)
    outcomes = ", ".join(f"{total[name]} {name}" for name in counts)
    lines = [
        f"usage {where}",
        "",
        table(rows, [*by, "calls", *counts, "cached", "input", "output", "cost"]),
        "",
        f"total: {total['attempts']} calls ({outcomes}, {total['cached_calls']} answered by the cache), "
        f"tokens {total['input_tokens']} in + {total['output_tokens']} out, cost {usage_cost(total)}",
    ]
    if total["unpriced"]:
        lines.append(f"price unknown for {total['unpriced']} calls: {PRICE_HINT}")
    return "\n".join(lines)


def size_text(size: int) -> str:
    """Bytes as a person reads them: `12.3 KiB (12595 bytes)`."""
    scaled, unit = float(size), "bytes"
    for bigger in ("KiB", "MiB", "GiB", "TiB"):
        if scaled < 1024:
            break
        scaled, unit = scaled / 1024, bigger
    return f"{size} bytes" if unit == "bytes" else f"{scaled:.1f} {unit} ({size} bytes)"


def cache_data(path: str, stats: CacheStats | None) -> dict[str, Any]:
    """`dse cache stats --json`: an absent cache file reads as an empty cache."""
    if stats is None:
        return {"path": path, "exists": False, "hits": 0, "misses": 0, "hit_rate": None, "entries": 0, "bytes": 0}
    return {"path": path, "exists": True, **asdict(stats), "hit_rate": stats.hit_rate}


def cache_text(data: dict[str, Any]) -> str:
    if not data["exists"]:
        return f"response cache {data['path']}: empty (nothing cached yet)"
    rate = "-" if data["hit_rate"] is None else f"{data['hit_rate']:.1%}"
    return "\n".join(
        [
            f"response cache {data['path']}",
            f"  hits {data['hits']}, misses {data['misses']}, hit rate {rate}",
            f"  entries {data['entries']}, {size_text(data['bytes'])}",
        ]
    )


def show_text(record: RunRecord) -> str:
    meta = record.meta
    lines = [
        f"run {record.id}: {meta.get('workflow_name')} ({meta.get('workflow')}) - {record.status}",
        f"config: {meta.get('config')}",
        f"inputs: {json.dumps(meta.get('inputs'), default=str)}",
        spend_line(record.spend),
        *calls_lines(record.calls),
    ]
    for step in record.steps.values():
        lines.append("")
        lines.append(step_line(StepResult.from_record(step)))
        if step.get("prompt"):
            lines.append(f"  prompt: {_clip(step['prompt'])}")
        if step.get("output") is not None:
            lines.append(f"  output: {_clip(step['output'])}")
        for attempt in step.get("tries") or []:
            lines.append(f"  attempt: {json.dumps(attempt, default=str)}")
    if record.outputs:
        lines.append("")
        lines += [f"== {name} ==\n{printable(str(value))}" for name, value in record.outputs.items()]
    return "\n".join(lines)


def _clip(value: Any, limit: int = 400) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = printable(text.replace("\n", "\\n"))
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def graph_text(workflow: Workflow, graph: nx.DiGraph[str], form: str) -> str:
    """Mermaid for Markdown viewers, dot for Graphviz; a node's label says what kind of step it is."""
    def label(step_id: str) -> str:
        step = workflow.step(step_id)
        what = step.tool or ("run" if step.kind == "run" else step.kind)
        return f"{step_id}\\n({what})" if form == "dot" else f"{step_id}<br/>({what})"

    if form == "dot":
        lines = [f'digraph "{workflow.name}" {{', "  rankdir=LR;"]
        lines += [f'  "{n}" [label="{label(n)}"];' for n in graph.nodes]
        lines += [f'  "{a}" -> "{b}";' for a, b in graph.edges]
        return "\n".join([*lines, "}"])
    lines = ["flowchart LR"]
    lines += [f'  {n}["{label(n)}"]' for n in graph.nodes]
    lines += [f"  {a} --> {b}" for a, b in graph.edges]
    return "\n".join(lines)


def status_data(reports: list[BackendReport]) -> list[dict[str, Any]]:
    return [{**asdict(r), "ok": r.ok} for r in reports]


def status_text(reports: list[BackendReport]) -> str:
    """One screen: a line per backend, a line per endpoint, the reason wherever something is wrong."""
    lines = []
    for r in reports:
        mark = "ok" if r.ok else "!!"
        usage = f"  ({'; '.join(r.usage)})" if r.usage else ""
        lines.append(f"[{mark}] {r.name} ({r.type}: {r.protocol}){usage}")
        if r.unavailable:
            lines.append(f"     unavailable: {r.unavailable}")
        if r.managed is not None:
            m = r.managed
            lines.append(f"     managed: {m['replicas']} x {m['model']}, {m['state']}")
            lines.append(f"     capacity: {m['capacity']}")
            lines.append(f"     {'problem: ' + m['error'] if 'error' in m else 'llama-server: ' + m.get('binary', '?')}")
        for e in r.endpoints:
            h = e.health
            if h is None:
                lines.append(f"     {e.url}: not probed" + (" (backend unavailable)" if r.unavailable else ""))
                continue
            state = "ready" if h.ready else ("loading" if h.loading else ("reachable, not ready" if h.reachable else "unreachable"))
            latency = f" {h.latency * 1000:.0f} ms" if h.latency is not None else ""
            roles = f" [{', '.join(e.roles)}]" if e.roles else ""
            hint = f" (hint: {r.start_hint})" if not h.reachable and r.start_hint else ""
            lines.append(f"     {e.url}{roles}: {state}{latency}" + (f" - {h.detail}" if h.detail else "") + hint)
            if e.models:
                names = [m.name + (" (loaded)" if m.loaded else "") for m in e.models]
                lines.append(f"       models: {', '.join(names[:12])}" + (f" ... +{len(names) - 12}" if len(names) > 12 else ""))
            elif e.models_error:
                lines.append(f"       models: {e.models_error}")
            if e.missing and r.pull_hint:
                lines.append(f"       not pulled: {', '.join(e.missing)} ({r.pull_hint.format(model=e.missing[0])})")
            elif e.missing:
                lines.append(f"       not offered by the server: {', '.join(e.missing)}")
            if e.balance is not None:
                lines += _balance_lines(e.balance, local=r.local)
    return "\n".join(lines)


def _balance_lines(b: BalanceReport, *, local: bool) -> list[str]:
    """Capacity and load as the server reports them, the GPU reading, and whether the balancer would use it."""
    load = [f"capacity {b.capacity} ({b.capacity_source})"]
    if b.busy is not None:
        load.append(f"{b.busy} busy")
    if b.waiting:
        load.append(f"{b.waiting} waiting")
    if b.kv_cache_usage is not None:
        load.append(f"KV cache {b.kv_cache_usage:.0%} used")
    lines = [f"       load: {', '.join(load)}"]
    if b.gpu is not None:
        lines.append(f"       {b.gpu}")
    elif local:
        lines.append("       GPU: not checked (give the endpoint `gpu:` to check headroom)")
    return [*lines, f"       balancer: {b.reason}"]


def model_rows(reports: list[BackendReport]) -> list[dict[str, Any]]:
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for r in reports:
        for role, model in r.configured_models.items():
            row = rows.setdefault((r.name, model), {"backend": r.name, "model": model, "roles": [], "offered_by": [], "loaded": None})
            row["roles"].append(role)
        for e in r.endpoints:
            for m in e.models:
                row = rows.setdefault((r.name, m.name), {"backend": r.name, "model": m.name, "roles": [], "offered_by": [], "loaded": None})
                row["offered_by"].append(e.url)
                if m.loaded is not None:
                    row["loaded"] = bool(row["loaded"]) or m.loaded
    return list(rows.values())


def cell_text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "-"
    return "-" if value is None else str(value)


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    body = [[cell_text(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(columns, *body)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in body]
    return "\n".join(line.rstrip() for line in lines)
