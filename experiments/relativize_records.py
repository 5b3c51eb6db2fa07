"""Rewrites the absolute machine paths in run records so that the records hold none; safe to rerun.

  python experiments/relativize_records.py [DIR ...] [--dry_run]     (default: experiments/results)

A run folder is a folder holding `config.json` or `summary.json`. In each finished one, the records (`config.json`,
`summary.json`, `run.log`, `metrics.jsonl`, and in its checkpoints orbax's `meta/metadata` and
`commit_success.txt`) are rewritten in place:
  - `data.path`: an absolute archive folder becomes the archive's name, which the data root resolves
    (`$SVDKD_DATA`, else `~/svdkd_data`; docs/data.md); the same path in the text records too;
  - paths into a clone (`/any/clone/experiments/...`) become repository-relative (`experiments/...`);
  - interpreters (`/any/venv/bin/python3.12`) become `python`;
  - the `--workdir=/abs/...` of a `$ ` command line in `run.log` becomes the run folder, repository-relative (runs
    trained elsewhere and copied into the repository).
Only those strings change, in the files' own text, so every record keeps its formatting and stays valid JSON/JSONL
(checked before writing; files are replaced atomically). A second run changes nothing.

Runs in progress are not touched: a folder without `summary.json`, or whose summary says `"complete": false`,
unless that summary is the one committed to git and nothing in the folder changed for `--quiet_minutes` (a run
stopped early on purpose and committed as it is). Absolute paths that no rule covers are listed at the end (exit 1).
"""

import argparse
from collections import Counter
from collections.abc import Iterator
import json
import os
import pathlib
import re
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
JSON_RECORDS = ("config.json", "summary.json", "metadata")
TEXT_RECORDS = ("run.log", "commit_success.txt")
JSONL_RECORDS = ("metrics.jsonl",)
RUN_MARKERS = ("config.json", "summary.json")

# An absolute path starts at a boundary: not inside a word, a relative path, a URL or a `$VAR/...`.
_START = r"(?<![\w.~$/:-])/"
_SEGMENT = r"[^\s/\"'=,;:()\[\]]+"
INTERPRETER = re.compile(_START + rf"(?:{_SEGMENT}/)*bin/python[\d.]*(?![\w./-])")
IN_CLONE = re.compile(_START + rf"(?:{_SEGMENT}/)+?(?=experiments/)")
WORKDIR_FLAG = re.compile(r"(--workdir[= ])(/\S+)")
LEFTOVER = re.compile(_START + r"(?:work|tmp|home|root|Users|mnt|scratch)/\S*")


def run_folders(top: pathlib.Path) -> Iterator[pathlib.Path]:
  """Every run folder under `top` (checkpoint directories are not searched for runs)."""
  for folder, dirs, files in os.walk(top):
    dirs[:] = sorted(d for d in dirs if d != "checkpoints" and not d.startswith("."))
    if any(m in files for m in RUN_MARKERS):
      yield pathlib.Path(folder)


def records(run: pathlib.Path) -> Iterator[pathlib.Path]:
  """The record files of one run folder: its own, and those in its checkpoints."""
  for name in JSON_RECORDS[:2] + TEXT_RECORDS[:1] + JSONL_RECORDS:
    if (run / name).is_file():
      yield run / name
  if (run / "checkpoints").is_dir():
    for folder, _, files in sorted(os.walk(run / "checkpoints")):
      for name in sorted(files):
        if name in ("metadata", "commit_success.txt") and (name == "commit_success.txt" or folder.endswith("meta")):
          yield pathlib.Path(folder) / name


def _committed_unchanged(path: pathlib.Path) -> bool:
  """True if `path` is tracked by git and identical to its committed version."""
  try:
    tracked = subprocess.run(["git", "ls-files", "--error-unmatch", path.name], cwd=path.parent,
                             capture_output=True, check=False).returncode == 0
    return tracked and subprocess.run(["git", "diff", "--quiet", "HEAD", "--", path.name], cwd=path.parent,
                                      capture_output=True, check=False).returncode == 0
  except OSError:
    return False


def in_progress(run: pathlib.Path, quiet_minutes: float) -> str:
  """Why `run` must not be touched ("" if it may be): a run without a summary, or one not complete."""
  summary = run / "summary.json"
  if not summary.is_file():
    return "no summary.json"
  try:
    complete = json.loads(summary.read_text()).get("complete") is True
  except (ValueError, AttributeError):
    return "summary.json is not a JSON object"
  if complete:
    return ""
  newest = max(p.stat().st_mtime for p in run.rglob("*") if p.is_file())
  if not _committed_unchanged(summary) or time.time() - newest < 60 * quiet_minutes:
    return "not complete"
  return ""


def data_paths(run: pathlib.Path) -> dict[str, str]:
  """{absolute archive folder: archive name} for the `data.path` values of the run's JSON records."""
  found = {}
  for path in records(run):
    if path.name not in JSON_RECORDS:
      continue
    try:
      record = json.loads(path.read_text())
    except ValueError:
      continue
    for config in (record, record.get("config") if isinstance(record, dict) else None):
      value = config.get("data", {}).get("path") if isinstance(config, dict) else None
      if isinstance(value, str) and value.startswith("/"):
        found[value] = pathlib.PurePosixPath(value.rstrip("/")).name
  return found


def rewrite_text(text: str, *, data: dict[str, str], run_rel: str, kinds: Counter) -> str:
  """`text` with the rules of the module docstring applied; counts each replacement in `kinds`."""
  for old in sorted(data, key=len, reverse=True):  # longest first: one archive path may prefix another
    pattern = re.compile(re.escape(old) + r"(?![\w.-])")
    text, n = pattern.subn(data[old], text)
    kinds["data path -> archive name"] += n

  def workdir(m: re.Match) -> str:
    kinds["--workdir -> run folder"] += 1
    return m.group(1) + run_rel

  if not run_rel.startswith(".."):  # (a run folder outside the repository keeps its command as it is)
    text = "\n".join(WORKDIR_FLAG.sub(workdir, line) if line.startswith("$ ") else line for line in text.split("\n"))
  text, n = INTERPRETER.subn("python", text)
  kinds["interpreter -> python"] += n
  text, n = IN_CLONE.subn("", text)
  kinds["clone path -> repository-relative"] += n
  return text


def _valid(path: pathlib.Path, text: str) -> bool:
  try:
    if path.name in JSON_RECORDS:
      json.loads(text)
    elif path.name in JSONL_RECORDS:
      for line in text.splitlines():
        if line.strip():
          json.loads(line)
  except ValueError:
    return False
  return True


def relativize(run: pathlib.Path, *, dry_run: bool, kinds: Counter) -> list[pathlib.Path]:
  """Rewrites the records of one finished run folder; returns the files changed."""
  data = data_paths(run)
  run_rel = os.path.relpath(os.path.abspath(run), os.path.abspath(ROOT))
  changed = []
  for path in records(run):
    old = path.read_text(errors="surrogateescape")
    was_valid = _valid(path, old)
    new = rewrite_text(old, data=data, run_rel=run_rel, kinds=kinds)
    if new == old:
      continue
    if was_valid and not _valid(path, new):
      raise ValueError(f"{path}: the rewrite would leave invalid JSON; nothing written")
    changed.append(path)
    if not dry_run:
      tmp = path.with_name(f".{path.name}.relativize{os.getpid()}")
      tmp.write_text(new, errors="surrogateescape")
      os.replace(tmp, path)
  return changed


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("dirs", nargs="*", default=[str(ROOT / "experiments" / "results")])
  parser.add_argument("--dry_run", action="store_true", help="report what would change, write nothing")
  parser.add_argument("--quiet_minutes", type=float, default=30.0,
                      help="an incomplete committed run is touched only after this long without a change")
  args = parser.parse_args(argv)
  kinds, changed, skipped, leftovers = Counter(), [], [], []
  for top in args.dirs:
    for run in run_folders(pathlib.Path(top)):
      why = in_progress(run, args.quiet_minutes)
      if why:
        skipped.append(f"{run} ({why})")
        continue
      changed += relativize(run, dry_run=args.dry_run, kinds=kinds)
      if not args.dry_run:
        for path in records(run):
          for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            leftovers += [f"{path}:{n}: {m.group(0)[:120]}" for m in LEFTOVER.finditer(line)]
  verb = "would change" if args.dry_run else "changed"
  print(f"{verb} {len(changed)} files: " + (", ".join(f"{n} {k}" for k, n in sorted(kinds.items()) if n) or "none"))
  for line in skipped:
    print(f"skipped (in progress): {line}")
  for line in leftovers:
    print(f"absolute path left: {line}")
  return 1 if leftovers else 0


if __name__ == "__main__":
  sys.exit(main())
