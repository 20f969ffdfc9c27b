"""A realistic usage script; `mypy --strict` checks it against omk's stubs."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import omk

if TYPE_CHECKING:  # the document types exist only in the stubs
    from omk._omk import GatesReport, TeamDoc


def summarize(doc: TeamDoc) -> str:
    done = sum(1 for t in doc["tasks"] if t["status"] == "completed")
    return f'{doc["name"]}: {doc["phase"]}, {done}/{len(doc["tasks"])} tasks, {doc["tokens"]} tokens'


def main() -> int:
    o = omk.Omk(project_dir=".")
    if not o.doctor()["healthy"]:
        return 2
    try:
        doc = o.team_run("2:executor", "Tidy the docs", subtasks=["a [tokens:10:5]", "b"], no_gates=True)
    except omk.CancelledError as e:
        print(f"cancelled team {e.team}", file=sys.stderr)
        return 130
    except omk.OmkError as e:
        print(f"omk failed ({e.code}): {e}", file=sys.stderr)
        return 1
    print(summarize(doc))
    kinds = [ev["kind"] for ev in o.team_events(doc["name"])]
    gates: GatesReport = o.gates_run()
    print(kinds.count("task_completed"), gates["passed"], o.metrics()["total_team_runs"])
    return 0 if doc["phase"] == "Completed" else 1


if __name__ == "__main__":
    sys.exit(main())
