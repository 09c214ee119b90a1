"""Mutation testing of the pure core, one module at a time, against that module's own tests.

    python mutation/run.py                 # every module in mutation/modules.toml
    python mutation/run.py messages planner
    python mutation/run.py --list

For each module a scratch folder ``.mutation/<name>/`` gets links to ``src`` and ``tests`` and
a ``pyproject.toml`` whose ``[tool.mutmut]`` section mutates that one file and selects that
module's unit tests; mutmut runs there (its log: ``.mutation/<name>/mutmut.log``). The score
leaves out the mutants listed in ``mutation/EQUIVALENT.md``; a listed mutant whose change no
longer matches (the source moved) or that the tests now kill is reported, not silently
excluded. Exit status 1 when a module scores under the bar in ``[settings]``.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "mutation"
WORK = ROOT / ".mutation"
MUTMUT = Path(sys.executable).with_name("mutmut")

# mutmut's exit-code verdicts (mutmut/stats.py): what counts as caught and what as missed.
KILLED = {1: "killed", 3: "killed", 37: "type check", -11: "segfault", -9: "segfault"}
KILLED |= dict.fromkeys((36, -24, 24, 152, 255), "timeout")
MISSED = {0: "survived", 5: "no tests", 33: "no tests"}


@dataclass(frozen=True)
class Module:
    name: str
    source: str
    tests: tuple[str, ...]
    mutants: tuple[str, ...] = ()  # globs of mutant names to run (default: all of the file)
    sample: int = 1  # run every n-th of those mutants (in name order)

    def selects(self, mutant: str) -> bool:
        return not self.mutants or any(fnmatch.fnmatchcase(mutant, g) for g in self.mutants)


@dataclass(frozen=True)
class Equivalent:
    module: str
    mutant: str
    change: str
    reason: str


@dataclass
class Outcome:
    module: Module
    seconds: float
    verdicts: dict[str, str]
    changes: dict[str, str] = field(default_factory=dict)
    excluded: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)

    @property
    def survivors(self) -> list[str]:
        return [m for m, v in self.verdicts.items() if v in MISSED.values()]

    def counts(self) -> tuple[int, int, int]:
        """(mutants, killed, equivalent excluded)."""
        total = len(self.verdicts)
        killed = sum(1 for v in self.verdicts.values() if v in KILLED.values())
        return total, killed, len(self.excluded)

    def score(self) -> float:
        total, killed, excluded = self.counts()
        counted = total - excluded
        return killed / counted if counted else 1.0


def load_config() -> tuple[dict[str, object], list[Module]]:
    data = tomllib.loads((HERE / "modules.toml").read_text())
    modules = [
        Module(
            m["name"],
            m["source"],
            tuple(m["tests"]),
            tuple(m.get("mutants", ())),
            int(m.get("sample", 1)),
        )
        for m in data["module"]
    ]
    return data["settings"], modules


def load_equivalents() -> list[Equivalent]:
    """Rows of the table in EQUIVALENT.md: | module | `mutant` | `change` | reason |
    (a ``|`` inside a cell is written ``\\|``)."""
    rows = []
    for line in (HERE / "EQUIVALENT.md").read_text().splitlines():
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if len(cells) == 4 and "__mutmut_" in cells[1]:
            rows.append(Equivalent(cells[0], cells[1].strip("`"), cells[2].strip("`"), cells[3]))
    return rows


def toml_list(items: object) -> str:
    return json.dumps(list(items))  # type: ignore[call-overload]


def prepare(module: Module, settings: dict[str, object], keep: bool) -> Path:
    folder = WORK / module.name
    if folder.exists() and not keep:
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("src", "tests"):
        link = folder / name
        if not link.exists():
            link.symlink_to(ROOT / name)
    section = "\n".join(
        [
            "",
            "[tool.mutmut]",
            'source_paths = ["src/fleetpulse"]',
            f"only_mutate = {toml_list([module.source])}",
            f"pytest_add_cli_args_test_selection = {toml_list(module.tests)}",
            f"pytest_add_cli_args = {toml_list(settings['pytest_args'])}",
            f"timeout_multiplier = {settings['timeout_multiplier']}",
            f"timeout_constant = {settings['timeout_constant']}",
            "",
        ]
    )
    (folder / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text() + section)
    return folder


def mutmut_run(module: Module, folder: Path, children: int, names: list[str]) -> None:
    with (folder / "mutmut.log").open("a") as log:
        done = subprocess.run(
            [str(MUTMUT), "run", "--max-children", str(children), *names],
            cwd=folder,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if done.returncode != 0:
        tail = (folder / "mutmut.log").read_text()[-3000:]
        raise SystemExit(f"{module.name}: mutmut failed (exit {done.returncode}):\n{tail}")


def sampled(module: Module, names: list[str]) -> list[str]:
    chosen = sorted(n for n in names if module.selects(n))
    return chosen[:: module.sample]


NAMES = """
import json, sys
from pathlib import Path
from mutmut.mutation.file_mutation import mutate_file_contents
from mutmut.utils.format_utils import get_mutant_name
path = Path(sys.argv[1])
mutated = mutate_file_contents(str(path), path.read_text())
json.dump([get_mutant_name(path, name) for name in mutated.mutant_names], sys.stdout)
"""


def mutant_names(module: Module, folder: Path) -> list[str]:
    """Every mutant mutmut makes of the module, without running anything."""
    listed = subprocess.run(
        [sys.executable, "-c", NAMES, module.source],
        cwd=folder,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names: list[str] = json.loads(listed)
    return names


def run_module(module: Module, settings: dict[str, object], children: int, keep: bool) -> Outcome:
    folder = prepare(module, settings, keep)
    (folder / "mutmut.log").write_text("")
    started = time.monotonic()
    if module.sample > 1:
        mutmut_run(module, folder, children, sampled(module, mutant_names(module, folder)))
    else:
        mutmut_run(module, folder, children, list(module.mutants))
    seconds = time.monotonic() - started
    (folder / "seconds").write_text(f"{seconds:.1f}\n")
    return read_outcome(module)


def read_codes(module: Module) -> dict[str, int | None]:
    meta = WORK / module.name / "mutants" / (module.source + ".meta")
    if not meta.exists():
        return {}
    codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
    return codes


def read_outcome(module: Module) -> Outcome:
    """The verdicts of the last run in .mutation/<name>, of the selected (sampled) mutants."""
    folder = WORK / module.name
    codes = read_codes(module)
    if not codes:
        raise SystemExit(f"{module.name}: no results in {folder}; run it first")
    chosen = set(sampled(module, list(codes)))
    verdicts = {
        name: KILLED.get(code, MISSED.get(code, f"exit {code}")) if code is not None else "not run"
        for name, code in codes.items()
        if name in chosen
    }
    seconds = float((folder / "seconds").read_text()) if (folder / "seconds").exists() else 0.0
    return Outcome(module, seconds, verdicts)


DIFFS = """
import json, sys
from mutmut.mutation.diff_apply import get_diff_for_mutant
names = json.load(sys.stdin)
json.dump({name: get_diff_for_mutant(name, path=sys.argv[1]) for name in names}, sys.stdout)
"""


def changes_of(folder: Path, source: str, mutants: list[str]) -> dict[str, str]:
    """Each mutant's diff (as ``mutmut show`` prints it) on one line: '- old / + new'."""
    shown = subprocess.run(
        [sys.executable, "-c", DIFFS, source],
        cwd=folder,
        input=json.dumps(mutants),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    changes = {}
    for mutant, diff in json.loads(shown).items():
        lines = [line for line in diff.splitlines() if re.match(r"[-+](?![-+]{2} )", line)]
        changes[mutant] = " / ".join(f"{line[0]} {line[1:].strip()}" for line in lines)
    return changes


def judge(outcome: Outcome, equivalents: list[Equivalent]) -> None:
    folder = WORK / outcome.module.name
    listed = {e.mutant: e for e in equivalents if e.module == outcome.module.name}
    outcome.changes = changes_of(folder, outcome.module.source, outcome.survivors)
    for mutant, entry in listed.items():
        verdict = outcome.verdicts.get(mutant)
        if verdict is None:
            outcome.stale.append(f"{mutant}: no such mutant now")
        elif verdict not in MISSED.values():
            outcome.stale.append(f"{mutant}: listed as equivalent but {verdict}")
        elif outcome.changes[mutant] != entry.change:
            outcome.stale.append(f"{mutant}: change is now `{outcome.changes[mutant]}`")
        else:
            outcome.excluded.append(mutant)


def report(outcomes: list[Outcome], bar: float) -> str:
    lines = [
        "| module | mutants | killed | equivalent | score | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        total, killed, excluded = o.counts()
        lines.append(
            f"| {o.module.name} | {total} | {killed} | {excluded} | "
            f"{o.score():.1%} | {o.seconds:.0f} |"
        )
    for o in outcomes:
        missed = [m for m in o.survivors if m not in o.excluded]
        if missed:
            lines += ["", f"{o.module.name}: not killed ({len(missed)})"]
            lines += [f"  {m} [{o.verdicts[m]}]: {o.changes.get(m, '')}" for m in missed]
        if o.stale:
            lines += ["", f"{o.module.name}: EQUIVALENT.md rows that no longer apply"]
            lines += [f"  {s}" for s in o.stale]
    under = [o.module.name for o in outcomes if o.score() < bar]
    verdict = f"UNDER: {', '.join(under)}" if under else "all modules pass"
    lines += ["", f"bar {bar:.0%}: {verdict}"]
    return "\n".join(lines)


def main() -> int:
    settings, modules = load_config()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="modules to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the modules and exit")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--keep", action="store_true", help="reuse .mutation/<name> (incremental)")
    parser.add_argument("--report", action="store_true", help="only report the last run's results")
    args = parser.parse_args()
    if args.list:
        for m in modules:
            scope = f" [{' '.join(m.mutants)}]" if m.mutants else ""
            every = f" (every {m.sample}th mutant)" if m.sample > 1 else ""
            print(f"{m.name}: {m.source}{scope}{every} <- {' '.join(m.tests)}")
        return 0
    unknown = set(args.names) - {m.name for m in modules}
    if unknown:
        parser.error(f"unknown module(s): {', '.join(sorted(unknown))}")
    chosen = [m for m in modules if not args.names or m.name in args.names]
    for module in [m for m in chosen if not (ROOT / m.source).exists()]:
        print(f"== {module.name}: skipped, {module.source} is not in this tree", flush=True)
        chosen.remove(module)
    equivalents = load_equivalents()
    outcomes = []
    started = time.monotonic()
    for module in chosen:
        print(f"== {module.name}: {module.source} against {' '.join(module.tests)}", flush=True)
        if args.report:
            outcome = read_outcome(module)
        else:
            outcome = run_module(module, settings, args.max_children, args.keep)
        judge(outcome, equivalents)
        total, killed, excluded = outcome.counts()
        print(f"   {killed}/{total - excluded} killed in {outcome.seconds:.0f} s", flush=True)
        outcomes.append(outcome)
    bar = float(settings.get("bar", 0.9))  # type: ignore[arg-type]
    text = report(outcomes, bar)
    if not args.report:
        took = time.monotonic() - started
        text += f"\n\ntotal {took:.0f} s with --max-children {args.max_children}"
    print(text)
    WORK.mkdir(exist_ok=True)
    (WORK / "summary.txt").write_text(text + "\n")
    return 1 if any(o.score() < bar for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
