"""A small Dockerfile and .dockerignore reader for the static checks of the images.

Enough of the Dockerfile grammar for our own files: comments, line continuations, ``--flag=value``
options, exec (JSON) and shell forms, ``ARG`` defaults used in ``FROM``. There is no Docker engine
here, so these checks plus running the commands outside Docker are what we can verify.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DockerIgnore",
    "Dockerfile",
    "Instruction",
    "Stage",
    "duration_seconds",
    "healthcheck_command",
    "substitute_args",
]

_FLAG = re.compile(r"--([a-z-]+)(?:=(\S*))?\s+")


@dataclass(frozen=True)
class Instruction:
    """One instruction: ``keyword`` upper-cased, ``flags`` (``--from=builder``), the rest."""

    keyword: str
    args: str
    flags: dict[str, str] = field(default_factory=dict)

    @property
    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form instruction, else None."""
        text = self.args.strip()
        if not text.startswith("["):
            return None
        value = json.loads(text)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), text
        return value

    @property
    def words(self) -> list[str]:
        """The arguments split as a shell would (for COPY, USER, EXPOSE, ...)."""
        form = self.exec_form
        return form if form is not None else shlex.split(self.args)


@dataclass
class Stage:
    """The instructions from one ``FROM`` to the next."""

    base: str
    name: str | None
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None

    @property
    def args(self) -> dict[str, str]:
        """Defaults of the ``ARG`` declared in this stage (what a plain build uses)."""
        return {
            key: default
            for key, _, default in (i.args.strip().partition("=") for i in self.all("ARG"))
        }

    @property
    def env(self) -> dict[str, str]:
        """``ENV`` settings of this stage (``KEY=value`` form; values unquoted; ``${ARG}``
        replaced by the stage's ``ARG`` default)."""
        env: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for word in shlex.split(instruction.args):
                key, sep, value = word.partition("=")
                assert sep, f"ENV {instruction.args!r}: use the KEY=value form"
                env[key] = _substitute(value, {**self.args, **env}, keep_unknown=True)
        return env


class Dockerfile:
    """A parsed Dockerfile: global ``ARG`` defaults and the stages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.global_args: dict[str, str] = {}
        self.stages: list[Stage] = []
        for instruction in _instructions(path.read_text(encoding="utf-8")):
            if instruction.keyword == "FROM":
                words = instruction.words
                base = _substitute(words[0], self.global_args)
                name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
                self.stages.append(Stage(base=base, name=name, instructions=[]))
            elif not self.stages:
                assert instruction.keyword == "ARG", f"{path}: {instruction.keyword} before FROM"
                key, _, default = instruction.args.strip().partition("=")
                self.global_args[key] = default
            else:
                self.stages[-1].instructions.append(instruction)
        assert self.stages, f"{path}: no FROM"

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)


def _substitute(text: str, args: dict[str, str], keep_unknown: bool = False) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return args.get(name, match.group(0)) if keep_unknown else args[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, text)


def substitute_args(text: str, stage: Stage) -> str:
    """``text`` with the stage's ``ARG`` defaults filled in (``requirements/${LOCK}.txt``)."""
    return _substitute(text, stage.args)


def _instructions(text: str) -> list[Instruction]:
    """Logical lines (continuations joined, comments dropped) turned into instructions."""
    instructions = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        instructions.append(_instruction(pending + line))
        pending = ""
    assert not pending, "dangling line continuation at the end of the file"
    return instructions


def _instruction(line: str) -> Instruction:
    keyword, _, rest = line.partition(" ")
    rest = rest.strip() + " "
    flags = {}
    while match := _FLAG.match(rest):
        flags[match.group(1)] = match.group(2) or ""
        rest = rest[match.end() :]
    return Instruction(keyword=keyword.upper(), args=rest.strip(), flags=flags)


class DockerIgnore:
    """``.dockerignore`` matching: last matching pattern wins; ``!`` re-includes; a path is
    excluded with its parent directory."""

    def __init__(self, path: Path) -> None:
        self.rules: list[tuple[bool, re.Pattern[str]]] = []
        for raw in path.read_text(encoding="utf-8").splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            pattern = line[1:].strip() if negated else line
            self.rules.append((negated, _pattern_regex(pattern.strip("/"))))

    def excludes(self, relative: str) -> bool:
        """Whether ``relative`` (a path from the context root) is left out of the context."""
        parts = Path(relative).parts
        excluded = False
        for negated, regex in self.rules:
            for depth in range(1, len(parts) + 1):
                if regex.fullmatch("/".join(parts[:depth])):
                    excluded = not negated
                    break
        return excluded


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Go ``filepath.Match`` plus ``**`` (any number of directories), as Docker reads it."""
    regex = []
    parts = pattern.split("/")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            regex.append(".*" if last else "(?:.*/)?")
            continue
        regex.append(_segment_regex(part) + ("" if last else "/"))
    return re.compile("".join(regex))


def _segment_regex(segment: str) -> str:
    out = []
    i = 0
    while i < len(segment):
        char = segment[i]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and "]" in segment[i + 1 :]:
            end = segment.index("]", i + 1)
            body = segment[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith(("^", "!")) else body) + "]")
            i = end
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def healthcheck_command(instruction: Instruction) -> list[str]:
    """The exec-form command of ``HEALTHCHECK [options] CMD [...]``."""
    assert instruction.keyword == "HEALTHCHECK", instruction
    kind, _, command = instruction.args.partition(" ")
    assert kind.upper() == "CMD", f"HEALTHCHECK {instruction.args!r}: expected CMD"
    form = Instruction(keyword="CMD", args=command).exec_form
    assert form is not None, "HEALTHCHECK CMD must be in exec (JSON) form: slim has no shell tools"
    return form


def duration_seconds(text: str) -> float:
    """A Go duration (``1m30s``, ``60s``, ``500ms``), as Docker and Compose write them, in s."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|ns|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(float(n) * units[u] for n, u in parts)
