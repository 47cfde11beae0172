"""Commands shown in the docs and --help texts, and how a test runs each of them here."""
from __future__ import annotations

import dataclasses
import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parent.parent
DOC_FILES = (REPO / "README.md", *sorted((REPO / "docs").glob("*.md")))
# A line in a plain ``` block is a command when it starts with one of these.
COMMAND_WORDS = ("python ", "python3.11 ", "pytest ", "tensorboard ")
_FENCE = re.compile(r"^( *)```(\w*)\n(.*?)^\1```", re.M | re.S)
_INLINE = re.compile(r"`((?:python -m|python experiments/)[^`]+)`")
_SETUP = re.compile(r"^python3\.11 -m venv \.venv && \. \.venv/bin/activate && "
                    r"pip install -e (\S+) && (.*)$")
# Submitting to Google Cloud or building images needs credentials and Docker; the xpk CLI's own
# virtualenv is what tests/test_xpk.py builds and uses.
NOT_HERE = {
    r"^IMAGE=": "sets a shell variable for the Docker commands below it",
    r"^(gcloud|docker) ": "needs Docker and Google Cloud credentials",
    r"harness-xpk-venv($|/bin/pip )": "the xpk CLI's own virtualenv: tests/test_xpk.py builds it",
}


# Placeholders the docs use for the main job's outputs, as a test runs them.
PLACEHOLDERS = {" OUT/my_run": " out/quickstart", " OUT ": " out "}


@dataclasses.dataclass(frozen=True)
class Documented:
  """A command as printed, and where."""
  text: str
  source: str


def _strip_comment(line: str) -> str:
  return re.sub(r"\s+#\s.*$", "", line).rstrip()


def logical_lines(block: str) -> list[str]:
  """Commands of a shell block: continuations joined, `for ... done` kept whole, comments gone."""
  out, pending, loop = [], "", []
  for raw in block.splitlines():
    line = _strip_comment(raw.strip())
    if not line or line.startswith("#"):
      continue
    if loop or line.startswith("for "):
      loop.append(line)
      if line.startswith("done"):
        out.append("\n".join(loop))
        loop = []
      continue
    if line.endswith("\\"):
      pending += line[:-1].rstrip() + " "
      continue
    out.append(pending + line)
    pending = ""
  return out


def commands_in(text: str, source: str) -> list[Documented]:
  """Every command in ```bash blocks, and command lines of plain ``` blocks."""
  found = []
  for match in _FENCE.finditer(text):
    indent, lang, body = len(match.group(1)), match.group(2), match.group(3)
    body = "\n".join(line[indent:] for line in body.splitlines())
    if lang == "bash":
      found += [Documented(c, source) for c in logical_lines(body)]
    elif lang == "":
      found += [Documented(c, source) for c in logical_lines(body) if c.startswith(COMMAND_WORDS)]
  return found


def inline_mentions(text: str, source: str) -> list[Documented]:
  """`python -m ...` / `python experiments/...` spans in prose (outside fenced blocks)."""
  prose = _FENCE.sub("", text)
  spans = (m.group(1).strip() for m in _INLINE.finditer(prose))
  return [Documented(s, source) for s in spans if ": error:" not in s]  # quoted error messages


def with_placeholders_filled(cmd: str) -> str:
  for placeholder, value in PLACEHOLDERS.items():
    cmd = cmd.replace(placeholder, value)
  return cmd


def documented_commands() -> list[Documented]:
  """All commands of README.md and docs/*.md, placeholders filled, each once (where first shown)."""
  seen, out = set(), []
  for path in DOC_FILES:
    for cmd in commands_in(path.read_text(), path.name):
      text = with_placeholders_filled(cmd.text)
      if text not in seen:
        seen.add(text)
        out.append(Documented(text, cmd.source))
  return out


def help_commands(help_text: str, source: str) -> list[Documented]:
  """`python -m ...` examples in a --help text (its usage line is syntax, not a command)."""
  found = []
  for line in help_text.splitlines():
    if line.startswith("usage:"):
      continue
    for match in re.finditer(r"(?<![`\w])(python -m \S.*?)(?:`|$)", line):
      found.append(Documented(_strip_comment(match.group(1)).rstrip("."), source))
  return found


def not_here_reason(cmd: str) -> str | None:
  """Why a documented command cannot run on this machine, or None."""
  for pattern, reason in NOT_HERE.items():
    if re.search(pattern, cmd):
      return reason
  return None


def split_setup(cmd: str) -> tuple[str | None, str]:
  """('.' or "'.[test]'", the rest) for the README's set-up one-liners; (None, cmd) otherwise."""
  match = _SETUP.match(cmd)
  return (match.group(1), match.group(2)) if match else (None, cmd)


def modules_of(commands: list[Documented]) -> list[str]:
  """Every `python -m MODULE` the commands use, in order."""
  seen = []
  for cmd in commands:
    for module in re.findall(r"python -m ([\w.]+)", cmd.text):
      if module not in seen and module not in ("venv", "pytest", "pip"):
        seen.append(module)
  return seen
