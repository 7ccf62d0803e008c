"""`myonode explain`: a study's routing as readable tables (or JSON, via `StudyRouting`).

One overview of the series, then one table per profile with a row per rule and a column per
series (✓ matched / ✗ failed, with what was seen), the contrast evidence, and the decisions.
Profiles that no series of the study reaches by modality are listed in one line.
"""

from __future__ import annotations

from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from myonode.route.select import StudyRouting, unit_key


def _short(text: str, width: int = 38) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def overview(routing: StudyRouting) -> Table:
    table = Table(title=f"Series of study {routing.study_uid or '(empty Study Instance UID)'}")
    for column in (
        "series",
        "modality",
        "images",
        "plane",
        "slice",
        "kernel",
        "contrast",
        "decision",
    ):
        table.add_column(column)
    for unit in routing.units:
        key = unit_key(unit)
        status = routing.contrast.get(key)
        decisions = [d for d in routing.decisions if d.series_uid == unit.series_uid]
        selected = [d.pipeline for d in decisions if d.selected]
        slice_text = "" if unit.slice_thickness_mm is None else f"{unit.slice_thickness_mm:g} mm"
        table.add_row(
            escape(_short(unit.label)),
            unit.modality,
            str(unit.instance_count),
            unit.view if unit.is_radiograph else unit.plane,
            slice_text,
            escape(f"{unit.kernel} ({unit.kernel_class})" if unit.kernel else ""),
            status.status if status else "",
            Text(f"→ {', '.join(selected)}", style="bold green")
            if selected
            else Text("not routed", style="dim"),
        )
    return table


def profile_table(routing: StudyRouting, name: str) -> Table | None:
    outcome = next(o for o in routing.outcomes if o.profile.name == name)
    results = routing.rules[name]
    reached = [
        u for u in routing.units if all(r.ok for r in results[unit_key(u)] if r.rule == "modality")
    ]
    if not reached:
        return None
    profile = outcome.profile
    table = Table(
        title=f"Profile {profile.name} → pipeline {profile.pipeline} ({outcome.state})",
        title_justify="left",
    )
    table.add_column("rule")
    for unit in reached:
        number = unit.label.split(" ")[0]
        table.add_column(escape(number if number != "#?" else _short(unit.label, 22)))
    order: list[str] = []
    for unit in reached:
        for result in results[unit_key(unit)]:
            if result.rule not in order:
                order.append(result.rule)
    for rule in order:
        cells = []
        for unit in reached:
            found = next((r for r in results[unit_key(unit)] if r.rule == rule), None)
            if found is None:
                cells.append(Text("·", style="dim"))
                continue
            detail = found.detail.split(";")[0] if rule == "contrast" else found.detail
            cells.append(
                Text(
                    ("✓ " if found.ok else "✗ ") + _short(detail, 24),
                    style="green" if found.ok else "red",
                )
            )
        table.add_row(rule, *cells)
    outcome_cells = []
    for unit in reached:
        key = unit_key(unit)
        if key in outcome.selected:
            outcome_cells.append(Text("SELECTED", style="bold green"))
        elif key in outcome.not_chosen:
            outcome_cells.append(Text(_short(outcome.not_chosen[key], 26), style="yellow"))
        elif key in outcome.eligible:
            outcome_cells.append(Text("eligible"))
        else:
            outcome_cells.append(Text("excluded", style="dim"))
    table.add_row(Text("outcome", style="bold"), *outcome_cells)
    return table


def render(routing: StudyRouting, console: Console) -> None:
    console.print(overview(routing))
    unreached = []
    for outcome in routing.outcomes:
        table = profile_table(routing, outcome.profile.name)
        if table is None:
            unreached.append(f"{outcome.profile.name} ({outcome.profile.pipeline})")
        else:
            console.print(table)
            for note in outcome.notes:
                console.print(f"  note: {escape(note)}")
    if unreached:
        console.print(f"No series of a modality for: {', '.join(unreached)}")
    lines = []
    for unit in routing.units:
        status = routing.contrast.get(unit_key(unit))
        if status is not None:
            lines.append(f"  {escape(_short(unit.label))}: {escape(status.summary)}")
    if lines:
        console.print(Group("Contrast evidence:", *lines))
    console.print("Decisions:")
    labels = {u.series_uid: u.label for u in routing.units}
    for decision in routing.decisions:
        verdict = f"→ {decision.pipeline}" if decision.selected else "not routed"
        console.print(
            f"  {escape(_short(labels.get(decision.series_uid or '', '?')))}: {verdict}: "
            f"{escape(decision.reason)}"
        )
