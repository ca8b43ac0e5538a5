"""The runbooks under docs/runbooks/ stay true to what they document.

This proves: every alert in deploy/prometheus/runnerhub-alerts.yml has its page, named after
it, and no page names an alert that is gone; the index (docs/runbooks/README.md) links every
page; every relative link in the runbooks leads to a file; and every `runnerhub …` command
line quoted in a fenced code block (or as inline code in the prose) names a command that
exists in the CLI, with options that command takes. The CLI is read as click builds it from
the Typer app, so a renamed command or flag fails here rather than in front of an operator
at 3 a.m. The checker itself is shown to catch bad commands (a wrong flag or command, behind
a prompt, an environment variable, `&&`, `|`, `$(…)`, a line continuation, inline code).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
import typer.main
import yaml
from typer.core import TyperCommand, TyperGroup

from runnerhub.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = ROOT / "docs" / "runbooks"
INDEX = RUNBOOKS / "README.md"
RULES = ROOT / "deploy" / "prometheus" / "runnerhub-alerts.yml"

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE = re.compile(r"`(runnerhub [^`]+)`")  # inline code in the prose that runs runnerhub
LINK = re.compile(r"\]\(([^)\s]+)\)")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
SUBSHELL = re.compile(r"\$\(([^()]*)\)")
MENTION = re.compile(r"(^|[\s;|&(])runnerhub\s")  # a line that seems to run runnerhub
WRAPPERS = {"env", "exec", "time", "nohup", "command"}  # run the command that follows

# Typer builds its click command tree (with the click it carries) of these two classes.
Command = TyperGroup | TyperCommand


@dataclass(frozen=True)
class Quoted:
    """One logical shell line of a fenced code block (continuations joined, prompt gone), or
    an inline code span."""

    path: Path
    line: int  # where it starts in the file, from 1
    text: str

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def cli() -> TyperGroup:
    """The `runnerhub` command tree, as click runs it."""
    command = typer.main.get_command(app)
    assert isinstance(command, TyperGroup)
    return command


def alerts() -> list[str]:
    rules = yaml.safe_load(RULES.read_text())
    return [r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r]


def pages() -> list[Path]:
    return sorted(p for p in RUNBOOKS.glob("*.md") if p != INDEX)


def code_lines(path: Path, text: str) -> Iterator[Quoted]:
    """Each logical line inside the fenced code blocks of `text`, and each inline code span
    of its prose that starts with `runnerhub `."""
    inside = False
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        if FENCE.match(raw):
            inside = not inside
            pending = []
            continue
        if not inside:
            for span in INLINE.findall(raw):
                yield Quoted(path, number, span)
            continue
        line = raw.rstrip()
        if not pending:
            start = number
            line = line.lstrip()
            if line.startswith("$ "):
                line = line[2:]
        if line.endswith("\\"):
            pending.append(line[:-1])
            continue
        yield Quoted(path, start, " ".join([*pending, line]))
        pending = []


def invocations(text: str) -> Iterator[list[str]]:
    """The words after `runnerhub` of each runnerhub command in a shell line: at its start,
    after environment assignments, after `&&`, `||`, `;`, `|` or `(`, and inside `$(…)`."""
    for inner in SUBSHELL.findall(text):
        yield from invocations(inner)
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    segment: list[str] = []
    for token in [*lexer, ";"]:
        if token and set(token) <= set(lexer.punctuation_chars):
            while segment and (ASSIGNMENT.match(segment[0]) or segment[0] in WRAPPERS):
                segment.pop(0)
            if segment and Path(segment[0]).name == "runnerhub":
                yield segment[1:]
            segment = []
        else:
            segment.append(token)


def options(command: Command) -> set[str]:
    return {
        name
        for param in command.get_params(typer.Context(command))
        for name in (*param.opts, *param.secondary_opts)
    }


def command_problems(root: TyperGroup, words: list[str]) -> list[str]:
    """What is wrong with `runnerhub <words>`: a command that does not exist, or an option
    (`--flag`, `--flag=value`, `-f`) its command does not take."""
    command: Command = root
    path = ["runnerhub"]
    rest = list(words)
    problems: list[str] = []
    while isinstance(command, TyperGroup):
        if command.invoke_without_command and (not rest or rest[0].startswith("-")):
            break  # the group runs itself (`runnerhub backups --url …`), with its options
        while rest and rest[0].startswith("-"):
            flag = rest.pop(0).split("=", 1)[0]
            if flag not in options(command):
                problems.append(f"`{' '.join(path)}` has no option {flag}")
        if not rest:
            return problems  # a group alone prints its help
        sub = command.get_command(typer.Context(command), rest[0])
        if sub is None:
            return [*problems, f"`{' '.join(path)}` has no command {rest[0]!r}"]
        assert isinstance(sub, TyperGroup | TyperCommand), sub
        command = sub
        path.append(rest.pop(0))
    if command.context_settings.get("ignore_unknown_options"):
        return problems  # it passes its arguments on (github-sim, runner-sim)
    known = options(command)
    for word in rest:
        if word == "--":
            break
        flag = word.split("=", 1)[0]
        if flag.startswith("-") and len(flag) > 1 and flag not in known:
            problems.append(f"`{' '.join(path)}` has no option {flag}")
    return problems


def line_problems(root: TyperGroup, quoted: Quoted) -> tuple[int, list[str]]:
    """How many runnerhub commands the line holds, and what is wrong with them."""
    try:
        found = list(invocations(quoted.text))
    except ValueError as exc:  # unbalanced quotes: prose or output, unless it runs runnerhub
        if MENTION.search(quoted.text):
            return 1, [f"{quoted.where()}: cannot read {quoted.text!r} ({exc})"]
        return 0, []
    problems = [
        f"{quoted.where()}: {problem}: {quoted.text}"
        for words in found
        for problem in command_problems(root, words)
    ]
    return len(found), problems


def check_text(path: Path, text: str) -> tuple[int, list[str]]:
    root = cli()
    count, problems = 0, []
    for quoted in code_lines(path, text):
        n, found = line_problems(root, quoted)
        count += n
        problems += found
    return count, problems


def test_every_alert_has_its_runbook_and_every_alert_page_an_alert() -> None:
    names = alerts()
    assert len(names) >= 20, names
    have = {p.stem for p in pages()}
    missing = sorted(set(names) - have)
    assert not missing, f"alerts without a page in docs/runbooks/: {missing}"
    stale = sorted(n for n in have if n.startswith("RunnerHub") and n not in names)
    assert not stale, f"pages for alerts that no longer exist: {stale}"
    for name in names:
        first = (RUNBOOKS / f"{name}.md").read_text().splitlines()[0]
        assert first == f"# {name}", f"{name}.md should start with '# {name}', not {first!r}"


def test_the_index_links_every_page() -> None:
    linked = {
        (RUNBOOKS / target.split("#", 1)[0]).resolve()
        for target in LINK.findall(INDEX.read_text())
        if "://" not in target
    }
    missing = sorted(p.name for p in pages() if p.resolve() not in linked)
    assert not missing, f"docs/runbooks/README.md does not link: {missing}"


def test_every_relative_link_leads_to_a_file() -> None:
    broken = []
    for page in [INDEX, *pages()]:
        for number, line in enumerate(page.read_text().splitlines(), start=1):
            for target in LINK.findall(line):
                if "://" in target or target.startswith(("#", "mailto:")):
                    continue
                if not (page.parent / target.split("#", 1)[0]).exists():
                    broken.append(f"{page.relative_to(ROOT)}:{number}: {target}")
    assert not broken, "links to nothing:\n" + "\n".join(broken)


def test_every_quoted_runnerhub_command_exists_with_its_options() -> None:
    count, problems = 0, []
    for page in [INDEX, *pages()]:
        n, found = check_text(page, page.read_text())
        count += n
        problems += found
    assert count >= 50, f"only {count} runnerhub commands quoted: is the checker reading them?"
    assert not problems, f"{len(problems)} quoted command(s) would fail:\n" + "\n".join(problems)


BAD = {
    "a wrong flag": "runnerhub token create ci --rol admin",
    "a wrong command": "runnerhub node evict node-3",
    "a wrong group option": "runnerhub --version",
    "a flag of another command": "runnerhub backups --open",
    "behind a prompt": "$ runnerhub leader handoff --node node-2",
    "after an environment variable": "RUNNERHUB_TOKEN=x runnerhub events --kinds job.",
    "after &&": "true && runnerhub cluster status --urls x",
    "after a pipe": "echo | runnerhub incidents --closed",
    "inside $(…)": 'TOKEN="$(runnerhub token create ci --expires 30d)"',
    "continued on the next line": "runnerhub dr promote --config n.yaml \\\n    --webhook x",
    "with =value": "runnerhub dr restore --to-time=2026-11-30T19:00:00+00:00",
}


@pytest.mark.parametrize("line", BAD.values(), ids=BAD.keys())
def test_the_checker_catches_a_bad_command(line: str) -> None:
    count, problems = check_text(INDEX, f"```sh\n{line}\n```\n")
    assert count == 1
    assert len(problems) == 1, problems
    assert problems[0].startswith("docs/runbooks/README.md:2: "), problems


def test_the_checker_reads_inline_code_too() -> None:
    text = '# Title\n\nThen `runnerhub node drain node-2 --undoo --url "$RH"` and wait.\n'
    count, problems = check_text(INDEX, text)
    assert count == 1
    assert problems == [
        "docs/runbooks/README.md:3: `runnerhub node drain` has no option --undoo: "
        'runnerhub node drain node-2 --undoo --url "$RH"'
    ]


def test_the_checker_passes_good_commands_and_ignores_the_rest() -> None:
    text = "\n".join(
        [
            "Prose: runnerhub --nonsense is not code; `runnerhub_leader` is a metric.",
            "Inline: `runnerhub dr failback [--switch-back]`, `runnerhub dr promote --config …`.",
            "```sh",
            "$ RUNNERHUB_TOKEN=x runnerhub events -k job. -f --limit=5 --url https://rh",
            "runnerhub node drain node-2 --url https://rh && runnerhub leader handoff --to node-1",
            'runnerhub token create ci --role read --expires-in 30d | tee "$(mktemp)"',
            "runnerhub dr drill --no-failback --rate 2 \\",
            "    --before 5",
            "curl -s https://rh/metrics | grep runnerhub_leader  # not runnerhub itself",
            "runnerhub dr",
            "patronictl list --nonsense",
            "```",
            "```",
            "runnerhub: /etc/runnerhub.yaml: invalid configuration (2 problem(s))",
            "it's output, with an unbalanced quote",
            "```",
        ]
    )
    count, problems = check_text(INDEX, text)
    assert not problems
    assert count == 8
