"""Turning results into text and JSON for people and scripts; no logic, only presentation."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import asdict
from typing import IO, TYPE_CHECKING, Any

from .workflow.journal import Spend
from .workflow.results import TOLERATED, StepResult

if TYPE_CHECKING:
    import networkx as nx

    from .preflight import Hop, Preflight
    from .live import LiveView
    from pathlib import Path

    from .benchmark import Measurement
    from .routing.notes import Note
    from .routing.selector import Ranked
    from .spend import Confirm
    from .spend.cache import CacheStats
    from .status import BackendReport, BalanceReport
    from .workflow import Plan, RunResult, Workflow
    from .workflow.history import Pruning
    from .workflow.journal import RunJournal, RunRecord

_MARKS = {"waiting": "  ", "running": "..", "done": "ok", "skipped": "--", "failed": "XX"}
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Text from a model or a server with its control characters shown, not obeyed.

    On a terminal an escape sequence in an answer could clear the screen, retitle the window
    or draw a fake `[ok]` line over a failure; `\x1b` printed as text does none of that.
    """
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text.replace("\r\n", "\n"))


def state(result: StepResult) -> tuple[str, str]:
    """A step's mark and state word: a failure `continue_on_error` allowed reads `[!!] tolerated`, not a fatal `[XX] failed`."""
    if result.tolerated:
        return "!!", TOLERATED
    return _MARKS.get(result.status, "  "), result.status


def step_line(result: StepResult) -> str:
    """One progress line per step event: state, where it ran, tokens, time."""
    mark, word = state(result)
    return "  ".join([f"[{mark}] {result.id:<14} {word:<8}", *(text for _name, text in step_parts(result))])


def step_parts(result: StepResult) -> list[tuple[str, str]]:
    """What a step line says after the step's state, each part named, so the live view can order and fit them.

    Names: where, items, kind, tokens, cost, seconds, first_token, calls, attempts, cached, waited, cut, reused, error.
    """
    parts = []
    if result.kind == "llm" and result.backend:
        where = ", ".join(result.endpoints) or result.endpoint
        parts.append(("where", f"{result.backend}/{result.model}" + (f" @ {where}" if where else "")))
    if result.items_total is not None:
        parts.append(("items", f"{result.items_done}/{result.items_total} items"))
    elif result.kind != "llm":
        parts.append(("kind", result.kind))
    if result.status in ("done", "failed"):
        if result.kind == "llm":
            parts.append(("tokens", f"tokens {result.prompt_tokens}+{result.completion_tokens}"))
        if result.cost != 0:
            parts.append(("cost", money(result.cost)))
        parts.append(("seconds", f"{result.seconds:.2f}s"))
        if result.first_token is not None:
            parts.append(("first_token", f"first token {result.first_token:.2f}s"))
        if result.calls > 1:
            parts.append(("calls", f"calls {result.calls}"))
        if result.attempts > max(result.calls, 1):
            parts.append(("attempts", f"attempts {result.attempts}"))
        if result.cached_calls:
            parts.append(("cached", "cached" if result.cached_calls >= result.calls else f"{result.cached_calls}/{result.calls} cached"))
        if result.rate_waited > 0:
            parts.append(("waited", f"waited {result.rate_waited:.1f}s for rate limit"))
        cut = truncation(result)
        if cut:
            parts.append(("cut", cut))
    if result.reused:
        parts.append(("reused", "(reused from the resumed run)"))
    if result.error and result.status != "running":
        parts.append(("error", f"- {printable(result.error)}"))
    return parts


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


def note_line(note: Note) -> str:
    """A routing event as one line, under the step lines' marks: what happened first, where and why after."""
    from .routing.notes import BREAKER, FALLBACK, RATE_WAIT, REFUSED, RETRY  # only a run has notes: `dse show` loads no router

    reason = " ".join(printable(note.reason).split())
    said = {
        RETRY: f"retry in {note.seconds:.2g}s - {reason} - {note.backend} @ {note.endpoint}",
        FALLBACK: f"fallback {note.backend}/{note.model} -> {note.to} - {reason}",
        BREAKER: f"breaker open on {note.endpoint} ({note.backend}) for {note.seconds:g}s - {reason}",
        REFUSED: f"refused a call to {note.backend}/{note.model} - {reason}",
        RATE_WAIT: f"waiting {note.seconds:.2g}s for the rate limit of {note.backend}",
    }.get(note.kind, f"{note.kind} - {reason}")
    return f"  {note.step_id or 'run'}: {said}"


class Progress:
    """Step progress: on a terminal, the live view (`dse.live`, drawn with rich); piped, plain lines.

    Piped, each step event is one line (a fan-out: when it starts and when it ends) and so is
    each routing note; streamed text is written as it comes. rich is imported only for a terminal.
    """

    def __init__(self, plan: Plan, stream: IO[str]) -> None:
        self.stream = stream
        self.view: LiveView | None = None
        if stream.isatty():
            from .live import LiveView

            self.view = LiveView([_waiting(plan, step_id) for step_id in plan.order], stream)
        self.mid_line = False

    def started(self, journal: RunJournal) -> None:
        line = f"run {journal.run_id}  (journal: {journal.directory})"
        if self.view is not None:
            self.view.start(line)
        else:
            self._write(line + "\n")

    def step(self, result: StepResult) -> None:
        if self.view is not None:
            self.view.step(result)
        elif result.status == "running" and result.items_done:
            return  # piped: one line when a fan-out starts and one when it ends, not one per item
        else:
            self._line(step_line(result))

    def chunk(self, step_id: str, text: str) -> None:
        text = printable(text)
        if self.view is not None:
            self.view.chunk(step_id, text)
        else:
            self._write(text)
            self.mid_line = True

    def note(self, note: Note) -> None:
        if self.view is not None:
            self.view.print(note_line(note), style="yellow")
        else:
            self._line(note_line(note))

    def asking(self, ask: Confirm) -> Confirm:
        """`ask`, with the live view out of the way of the question (a no-op when piped)."""
        return self.view.asking(ask) if self.view is not None else ask

    def close(self) -> None:
        if self.view is not None:
            self.view.close()
        elif self.mid_line:
            self._write("\n")

    def _line(self, line: str) -> None:
        self._write(("\n" if self.mid_line else "") + line + "\n")
        self.mid_line = False

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


def run_spend(result: RunResult) -> Spend:
    """What this invocation spent: a step reused from the run it resumes was paid for, and counted, there."""
    return Spend.of(step for step in result.steps.values() if not step.reused)


def run_state(status: str, steps: Iterable[StepResult]) -> str:
    """A run's status with the failures it tolerated named: `done, 1 failure tolerated (whitespace)`."""
    tolerated = [step.id for step in steps if step.tolerated]
    if not tolerated:
        return status
    return f"{status}, {len(tolerated)} failure{'s' if len(tolerated) > 1 else ''} tolerated ({', '.join(tolerated)})"


def run_text(result: RunResult, calls: dict[str, dict[str, int]]) -> str:
    state_text = run_state(result.status, result.steps.values())
    lines = [f"workflow {result.workflow}: {state_text} in {result.seconds:.2f}s" + (f"  (run {result.run_id})" if result.run_id else "")]
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
    """The run record of schemas/records.schema.json, in the keys `dse show --json` uses too."""
    document = {
        "id": result.run_id,
        "workflow": result.workflow,
        "status": result.status,
        "seconds": round(result.seconds, 3),
        "steps": [asdict(r) for r in result.steps.values()],
        "outputs": result.outputs,
        "calls": calls,
        "spend": run_spend(result).as_dict(),
    }
    return json.dumps(document, indent=2, default=str)


def plan_rows(plan: Plan, found: Preflight | None = None) -> list[dict[str, Any]]:
    """A row per step; with `found`, a model step's `chain`: each backend it would try, available now or why not."""
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
        if found is not None and step_id in found.chains:
            row["chain"] = [hop.as_dict() for hop in found.chains[step_id]]
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


def plan_text(plan: Plan, *, verbose: bool = False, found: Preflight | None = None, profile: str | None = None) -> str:
    """The plan as a table; with `found`, each step's fallback chain and what is unavailable now (a probed endpoint that is down is marked so).

    The config's profile, when one is merged over it, heads the table: it changes where steps go.
    """
    rows = plan_rows(plan, found)

    def endpoints(row: dict[str, Any]) -> str | None:
        down = {d["endpoint"] for d in row["chain"][0]["down"]} if row.get("chain") else set()
        shown = [url + (" (down)" if url in down else "") for url in row.get("endpoints", [])]
        return ", ".join(shown) or ("managed" if row.get("backend") else None)

    shown = [{**r, "tool": r["tool"] or ("(run)" if r["kind"] == "run" else None), "endpoints": endpoints(r)} for r in rows]
    workflow = plan.workflow
    out = [f"workflow {workflow.name}" + (f": {workflow.description}" if workflow.description else "")]
    if profile is not None:
        out.append(f"  config profile {profile}")
    for spec in workflow.inputs.values():
        default = f", default {spec.default!r}" if spec.default is not None else (", required" if spec.required else "")
        out.append(f"  input {spec.name} ({spec.type}{default})" + (f" - {spec.description}" if spec.description else ""))
    out.append("")
    out.append(table(shown, ["step", "tool", "backend", "model", "endpoints", "rule"]))
    if found is not None:
        out += preflight_lines(found)
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
            if found is not None and r["step"] in found.chains:
                out.append(f"  {r['step']}: {fallback_reason(found.chains[r['step']])}")
    return "\n".join(line.rstrip() for line in out)


def hop_text(hop: Hop) -> str:
    """`backend/model`, marked `!!` when it cannot take a call now."""
    return ("!! " if not hop.available else "") + (f"{hop.backend}/{hop.model}" if hop.model else hop.backend)


def preflight_lines(found: Preflight) -> list[str]:
    """Each fallback chain (steps that share one on one line), then every backend unavailable now, and why."""
    grouped: dict[str, list[str]] = {}
    for step_id, hops in found.chains.items():
        if len(hops) > 1:
            grouped.setdefault(" -> ".join(map(hop_text, hops)), []).append(step_id)
    out = []
    if grouped:
        out += ["", "fallback chains (a failed call tries each in turn; !! = unavailable now):"]
        out += [f"  {', '.join(steps)}: {walk}" for walk, steps in grouped.items()]
    problems = found.problems()
    if problems:
        out += ["", "unavailable now:"]
        out += [f"  !! {backend}: {note}" for backend, notes in problems.items() for note in notes]
    stranded = found.stranded()
    if stranded:
        out.append(f"  no backend in the chain of {', '.join(stranded)} can take a call now: as things stand, they fail")
    if found.chains and not found.checked:
        out += ["", "endpoints not probed: `dse plan --check` asks each one before anything runs"]
    return out


def fallback_reason(hops: tuple[Hop, ...]) -> str:
    """The chain as a reason: where a failed call goes next, and why a hop cannot take it."""
    def named(hop: Hop) -> str:
        return hop_text(hop) + (f" ({hop.problem})" if hop.problem else "")

    if len(hops) == 1:
        return f"no fallback backends: if {named(hops[0])} fails, the step fails"
    return f"if {named(hops[0])} fails: " + ", then ".join(named(hop) for hop in hops[1:])


def selection_data(ranked: list[Ranked], rejected: list[Ranked]) -> dict[str, Any]:
    def row(r: Ranked) -> dict[str, Any]:
        return {
            "backend": r.candidate.backend,
            "model": r.candidate.model,
            "score": round(r.score, 2),
            "breakdown": {k: round(v, 2) for k, v in r.breakdown.items()},
            "context_window": r.info.context_window,
            "known": r.info.known,
            "speed": speed_data(r),
        }

    return {
        "ranked": [row(r) for r in ranked],
        "rejected": [{"backend": r.candidate.backend, "model": r.candidate.model, "reason": r.rejected} for r in rejected],
    }


def speed_data(r: Ranked) -> dict[str, Any]:
    """The speed score on its 0..10 scale and where it came from; a measured one with its tok/s and epoch time."""
    measured = r.info.measured
    data: dict[str, Any] = {"score": round(r.info.speed, 2), "source": r.info.speed_source}
    if measured is not None:
        data.update(tokens_per_second=round(measured.tokens_per_second, 2), measured_at=measured.measured_at)
    return data


def selection_text(ranked: list[Ranked], rejected: list[Ranked]) -> str:
    from .routing.catalog import speed_origin

    if not ranked:
        lines = ["no candidate passes the constraints"]
    else:
        lines = []
        for i, r in enumerate(ranked, 1):
            parts = ", ".join(f"{k} {v:.1f}" for k, v in r.breakdown.items())
            guess = "" if r.info.known else "  (not in the catalog: estimated from the name)"
            lines.append(f"{i}. {r.candidate.backend}:{r.candidate.model}  score {r.score:.1f}  ({parts}){guess}")
            lines.append(f"   speed: {speed_origin(r.info)}")
    lines += [f"   not considered: {r.candidate.backend}:{r.candidate.model}: {r.rejected}" for r in rejected]
    return "\n".join(lines)


def runs_text(records: list[RunRecord], *, more: bool = False) -> str:
    """`dse runs`: one row per run under a header; `more` when a limit left older runs out, which a last line says."""
    if not records:
        return "no runs match" if more else "no runs"
    rows = []
    for record in records:
        summary = record.summary()
        spend = record.spend
        rows.append(
            {
                "RUN": record.id,
                "WORKFLOW": summary["workflow"],
                "STATUS": summary["status"],
                "STARTED": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(summary["started"])) if summary["started"] else None,
                "TIME": f"{summary['seconds']:.1f}s" if summary["seconds"] is not None else None,
                "TOKENS": f"{spend.prompt_tokens}+{spend.completion_tokens}" if spend.calls or spend.prompt_tokens or spend.completion_tokens else None,
                "COST": cost_text(spend.priced_cost, spend.cost is None),
                "STEPS": summary["problem"] or ", ".join(f"{n} {status}" for status, n in sorted(summary["steps"].items())),
            }
        )
    text = table(rows, list(rows[0]), right={"TIME", "TOKENS", "COST"})
    return text + (f"\n(the newest {len(records)} shown: --limit N shows more, --limit 0 all)" if more else "")


def pruning_text(pruning: Pruning) -> str:
    """`dse runs prune`: a line per run removed (or, with --dry-run, that would be), then the totals."""
    verb = "would remove" if pruning.dry_run else "removed"
    lines = [
        f"{verb} {run.id}  {run.workflow or '-'}  last written {time.strftime('%Y-%m-%d %H:%M', time.localtime(run.written))}  {size_text(run.bytes)}"
        for run in pruning.removed
    ]
    total = sum(run.bytes for run in pruning.removed)
    summary = f"{verb} {len(pruning.removed)} runs" + (f", {size_text(total)}" if pruning.removed else "") + f"; kept {pruning.kept}"
    if pruning.running:
        summary += f", of which still running: {', '.join(pruning.running)}"
    return "\n".join([*lines, summary])


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


def show_text(record: RunRecord, *, full: bool = False) -> str:
    """`dse show`: the run, then each step; prompts and outputs cut to a few lines unless `full`, the run's outputs always whole."""
    meta = record.meta
    lines = [
        f"run {record.id}: {meta.get('workflow_name')} ({meta.get('workflow')}) - {run_state(record.status, map(StepResult.from_record, record.steps.values()))}",
        f"config: {meta.get('config')}",
        f"inputs: {json.dumps(meta.get('inputs'), default=str) if full else _clip(meta.get('inputs'), _SHORT_CHARS)}",
        spend_line(record.spend),
        *calls_lines(record.calls),
    ]
    for step in record.steps.values():
        lines.append("")
        lines.append(step_line(StepResult.from_record(step)))
        if step.get("prompt"):
            lines += _block("prompt", step["prompt"], full)
        if step.get("output") is not None:
            lines += _block("output", step["output"], full)
        lines += printed_lines(step)
        lines += tries_lines(step.get("tries") or [], step.get("backend") if step.get("status") == "done" else None)
    if record.outputs:
        lines.append("")
        lines.append(outputs_text(record.outputs, terminal=True, named=True))
    return "\n".join(lines)


def tries_lines(tries: list[dict[str, Any]], answered_by: str | None) -> list[str]:
    """Each failed try as a sentence: where, what went wrong, and what came next (a retry after a wait, or a fallback).

    Only failed tries are recorded, so after the last one the backend that answered (`answered_by`,
    None when nothing did) says where the call went.
    """
    lines = []
    for number, attempt in enumerate(tries):
        if "backend" not in attempt:  # a command the step's `retry:` ran again
            lines.append(f"  try {attempt.get('attempt')}: {printable(str(attempt.get('error')))}")
            continue
        where = attempt["backend"] + (f" @ {attempt['endpoint']}" if attempt.get("endpoint") else "")
        following = tries[number + 1].get("backend") if number + 1 < len(tries) else answered_by
        if following == attempt["backend"]:
            then = "; retried" + (f" after {attempt['waited']:g}s" if attempt.get("waited") else "")
        elif following is not None:
            then = f"; fell back to {following}"
        else:
            then = ""
        lines.append(f"  failed try: {where}: {attempt.get('error_kind') or 'error'}: {printable(str(attempt.get('error')))}{then}")
    return lines


def printed_lines(step: dict[str, Any]) -> list[str]:
    """A failed command's stdout and stderr as it printed them (already bounded), indented under the step."""
    lines = []
    for name in ("stdout", "stderr"):
        if step.get(name):
            lines += [f"  {name}:", *(f"    {line}" for line in printable(step[name]).splitlines())]
    return lines


def _clip(value: Any, limit: int) -> str:
    """A text on one line, its newlines as `\\n`, cut at `limit` characters: a tool's prompt template in `dse plan`, a run's inputs in `dse show`."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = printable(text.replace("\n", "\\n"))
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


_SHORT_LINES, _SHORT_CHARS = 8, 600  # how much of a prompt or output `dse show` prints without --full
_INLINE = 100  # a one-line prompt or output at most this long stays on its label's line


def _block(label: str, value: Any, full: bool) -> list[str]:
    """A prompt or output under its step: one short line inline, else indented lines; cut short unless `full`, saying how much was cut."""
    text = value_text(value, terminal=True).removesuffix("\n")
    shown = text if full else _head(text)
    lines = shown.split("\n")
    if shown == text and len(lines) == 1 and len(text) <= _INLINE:
        return [f"  {label}: {text}"]
    out = [f"  {label}:", *(f"    {line}" for line in lines)]
    if shown != text:
        more_lines = text.count("\n") - shown.count("\n")
        lines_note = f" in {more_lines} more lines" if more_lines else ""
        out.append(f"    ... {len(text) - len(shown)} more characters{lines_note} not shown (--full shows all)")
    return out


def _head(text: str) -> str:
    """The first few lines of `text`, at most _SHORT_CHARS characters of them."""
    cut = text[:_SHORT_CHARS]
    lines = cut.split("\n")[:_SHORT_LINES]
    return "\n".join(lines)


def value_text(value: Any, *, terminal: bool) -> str:
    """An output as text: a string as it is, any other value as JSON; on a terminal control characters shown, not obeyed."""
    text = value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False, default=str)
    return printable(text) if terminal else text


def outputs_text(outputs: Mapping[str, Any], *, terminal: bool, named: bool | None = None) -> str:
    """A run's outputs: each after a `== NAME ==` line when there are several (or `named`), one alone as it is.

    `dse run --quiet` prints a single output bare so a script takes it as it is, and with
    several, the header lines tell where one ends and the next begins.
    """
    if not (len(outputs) > 1 if named is None else named):
        return "\n".join(value_text(value, terminal=terminal) for value in outputs.values())
    return "\n".join(f"== {name} ==\n{value_text(value, terminal=terminal)}" for name, value in outputs.items())


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


def graph_data(workflow: Workflow, graph: nx.DiGraph[str]) -> dict[str, Any]:
    """`dse graph --json`: the steps as nodes (with their kind and tool) and each `needs` as an edge."""
    nodes = [{"id": n, "kind": workflow.step(n).kind, "tool": workflow.step(n).tool} for n in graph.nodes]
    return {"workflow": workflow.name, "nodes": nodes, "edges": [{"from": a, "to": b} for a, b in graph.edges]}


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
            latency = f" {h.latency * 1000:.0f} ms" if h.latency is not None else ""
            roles = f" [{', '.join(e.roles)}]" if e.roles else ""
            hint = f" (hint: {r.start_hint})" if not h.reachable and r.start_hint else ""
            lines.append(f"     {e.url}{roles}: {h.state}{latency}" + (f" - {h.detail}" if h.detail else "") + hint)
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


def bench_data(measured: list[Measurement], runs: int, saved: Path) -> dict[str, Any]:
    """`dse bench --json`: every (backend, model) measured, figures or error, and the file they were added to."""
    return {"runs": runs, "saved": str(saved), "results": [m.as_dict() for m in measured]}


def bench_text(measured: list[Measurement]) -> str:
    """The comparison table AIfred's users keep by hand: tokens/s, time to first token, prompt speed and VRAM per backend."""
    rows = [
        {
            "BACKEND": m.backend,
            "MODEL": m.model,
            "GEN TOK/S": _figure(m.generation_tps, "{:.1f}"),
            "FIRST TOKEN": _figure(m.ttft, "{:.3f}s"),
            "PROMPT TOK/S": _figure(m.prompt_tps, "{:.1f}"),
            "VRAM": _figure(m.vram_bytes / 2**30 if m.vram_bytes is not None else None, "{:.1f} GiB"),
            "ENDPOINT": f"failed: {m.error}" if m.error is not None else m.endpoint,
        }
        for m in measured
    ]
    return table(rows, list(rows[0]), right={"GEN TOK/S", "FIRST TOKEN", "PROMPT TOK/S", "VRAM"}) if rows else "nothing measured"


def _figure(value: float | None, form: str) -> str | None:
    return form.format(value) if value is not None else None


def cell_text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "-"
    return "-" if value is None else str(value)


def table(rows: list[dict[str, Any]], columns: list[str], *, right: Collection[str] = ()) -> str:
    """Rows under a header of the column names, each column as wide as its widest cell; `right` columns (numbers) right-aligned."""
    body = [[cell_text(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(columns, *body)]

    def line(cells: list[str]) -> str:
        return "  ".join(cell.rjust(width) if name in right else cell.ljust(width) for name, cell, width in zip(columns, cells, widths))

    lines = [line(columns), *(line(row) for row in body)]
    return "\n".join(line.rstrip() for line in lines)
