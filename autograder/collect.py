"""Import submissions into nbgrader's layout: `submitted/<student>/<lesson>/<notebook>.ipynb`.

The source is a folder or a zip. Its layout is recognised from the member names (`--layout`
overrides, `--id-pattern` gives the student id as a regex over file names):

layout       member names (examples)                                       student id
folder       alice/01-softmax/softmax.ipynb                                 alice
canvas       smithanna_4321_98765_softmax.ipynb, smithanna_late_4321_98766_softmax-1.ipynb
                                                                            smithanna_4321
moodle       Anna Smith_1234_assignsubmission_file_softmax.ipynb, or a folder per student
             Anna Smith_1234_assignsubmission_file_/softmax.ipynb          Anna Smith
blackboard   Lab 1_asmith_attempt_2024-03-01-10-15-00_softmax.ipynb (+ .txt receipts)  asmith
brightspace  13394-80551 - Smith, Anna - Mar 29, 2024 1205 PM - softmax.ipynb  Smith, Anna
gradescope   submission_123/softmax.ipynb + submission_metadata.yml        the :sid: (else email)
generic      anna_softmax.ipynb, 12345-softmax (1).ipynb: the name's first field  anna, 12345

The naming schemes were checked against public tools that parse real exports: Canvas's
`name_userid_fileid_file` and its `-1` suffix on a re-uploaded file (instructure/canvas-lms
issue 2406; gist RyanNutt/363baaf2; nus-cs2103-AY2223S2/forum issue 361); Moodle's
`Full Name_<participant id>_assignsubmission_file_` (gondree/canvas-offline-grading
moodle_submissions.py; Moodle's own mod/assign/locallib.php builds the prefix from the full
name with '_' turned into ' ', or "Participant" under blind marking, and
`get_uniqueid_for_user`, a per-assignment number); Blackboard's
`assignment_username_attempt_datetime_file` and its `.txt` receipt (kwurst/bb-file-cleanup);
Brightspace's `n-n - Name - Mon DD, YYYY HHMM PM - file` (kodiak's
parse_submission_file_name tests); Gradescope's `submission_metadata.yml` with
`:submitters:` / `:sid:` per `submission_<id>` folder (gist m13253/f3e418a5).

Moodle's participant id is per assignment, so the id is the full name (name and number
under blind marking, where every name is "Participant") and the number only guards against
merging: when two files map to one id but their names say they are different
people (two "Anna Smith" with different numbers, or two names the generic layout cuts to one
first field), the collect stops, writes nothing, and names an `--id-pattern` that tells them
apart (`CollectStopped`). Two files of the same student are resubmissions: newer attempts
supersede older ones, a newer copy of a file its older copy; among the remaining notebooks
`submissions.choose_notebook` picks the one with answers.

Nothing is dropped silently: every member offered (files, folders, empty folders included)
goes into the append-only ledger `reports/collect-ledger.jsonl` with its outcome, and the
summary lists every problem. Zip members are never extracted by their own path: unsafe
paths, symbolic links, oversized or lying (zip bomb) members, duplicate names and names not
in UTF-8 are listed with the reason.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import stat
import tempfile
import time
import unicodedata
import zipfile
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath

from autograder import submissions
from autograder.nbgrader_config import REPO
from autograder.sanitize import UnreadableNotebook

MAX_MEMBER_BYTES = 50 * 2**20
MAX_TOTAL_BYTES = 2 * 2**30  # read from one export, all members together
MAX_METADATA_BYTES = 10 * 2**20
DEFAULT_ID_PATTERN = r"^(?P<student>[^_\-/]+?)\s*[_-]"
LAYOUTS = ("gradescope", "moodle", "canvas", "blackboard", "brightspace", "folder", "generic")


class CollectStopped(ValueError):
    """The collect cannot go on without a decision (one line: what and how to decide)."""


# ---------------------------------------------------------------- members of the source


@dataclass
class Member:
    """One entry of the source: name is its '/'-separated path inside the folder or zip."""

    name: str
    kind: str  # "file", "dir", "symlink" or "other"
    size: int = 0
    mtime: float = 0.0
    problem: str | None = None  # why it is skipped whatever the layout
    reader: Callable[[], bytes] | None = None
    parts: tuple[str, ...] = ()  # path parts below a common wrapper folder

    def read(self) -> bytes:
        if self.reader is None:
            raise OSError("nothing to read")
        return self.reader()


def _folder_members(source: Path) -> list[Member]:
    members = []

    def failed(exc: OSError) -> None:
        rel = Path(exc.filename).relative_to(source).as_posix() if exc.filename else "?"
        members.append(Member(rel, "other", problem=f"cannot be listed ({exc.strerror})"))

    for dirpath, dirnames, filenames in os.walk(source, onerror=failed):
        for entry in sorted(dirnames) + sorted(filenames):
            path = Path(dirpath) / entry
            members.append(_folder_member(source, path))
    return sorted(members, key=lambda m: m.name)


def _folder_member(source: Path, path: Path) -> Member:
    rel = path.relative_to(source).as_posix()
    shown = rel.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    try:
        info = path.lstat()
    except OSError as exc:
        return Member(shown, "other", problem=f"cannot be read ({exc.strerror})")
    kind = (
        "symlink"
        if stat.S_ISLNK(info.st_mode)
        else "dir"
        if stat.S_ISDIR(info.st_mode)
        else "file"
        if stat.S_ISREG(info.st_mode)
        else "other"
    )
    member = Member(shown, kind, info.st_size if kind == "file" else 0, info.st_mtime)
    if shown != rel:
        member.problem = "its name is not UTF-8 text"
    elif kind == "file":
        member.reader = _file_reader(path)
    return member


def _file_reader(path: Path) -> Callable[[], bytes]:
    def read() -> bytes:
        with open(path, "rb") as handle:
            data = handle.read(MAX_MEMBER_BYTES + 1)
        if len(data) > MAX_MEMBER_BYTES:
            raise OSError("it grew past 50 MiB while being read")
        return data

    return read


def _zip_name(info: zipfile.ZipInfo) -> tuple[str, str | None]:
    """The member's name, and a problem if it cannot be trusted.

    Without the UTF-8 flag (bit 11) zipfile decodes a name as cp437. Many tools write UTF-8
    without setting the flag, so a name that re-encodes to valid UTF-8 is read as such;
    anything else is in an unknown code page and its student id cannot be read.
    """
    name = info.filename
    if info.flag_bits & 0x800 or name.isascii():
        return name, None
    try:
        return name.encode("cp437").decode("utf-8"), None
    except (UnicodeEncodeError, UnicodeDecodeError):
        return name, "its name is not UTF-8 (an unknown code page), so its student id is unreadable"


def _zip_problem(name: str, info: zipfile.ZipInfo) -> str | None:
    parts = PurePosixPath(name).parts
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "an absolute path inside the zip (never extracted)"
    if ".." in parts:
        return "a path that climbs out of the folder with '..' (zip slip; never extracted)"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "a symbolic link inside the zip (never followed)"
    if "\x00" in name:
        return "a NUL character in its name"
    return None


def _zip_members(archive: zipfile.ZipFile) -> list[Member]:
    infos = archive.infolist()
    names = []
    for info in infos:
        name, problem = _zip_name(info)
        names.append((name.replace("\\", "/"), problem))
    counts = Counter(n for n, _ in names)
    last = {n: i for i, (n, _) in enumerate(names)}
    members = []
    for index, (info, (name, problem)) in enumerate(zip(infos, names, strict=True)):
        kind = "dir" if info.is_dir() or name.endswith("/") else "file"
        problem = problem or _zip_problem(name, info)
        if problem is None and counts[name] > 1 and last[name] != index:
            problem = f"the zip holds {counts[name]} members named so; the last one is used"
        if kind == "file" and stat.S_ISLNK(info.external_attr >> 16):
            kind = "symlink"
        try:
            mtime = time.mktime((*info.date_time, 0, 0, -1))
        except (OverflowError, ValueError):
            mtime = 0.0
        member = Member(name.rstrip("/") or name, kind, info.file_size, mtime, problem)
        if kind == "file":
            member.reader = _zip_reader(archive, info)
        members.append(member)
    return members


def _zip_reader(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Callable[[], bytes]:
    def read() -> bytes:
        try:
            with archive.open(info) as handle:
                data = handle.read(MAX_MEMBER_BYTES + 1)
        except zipfile.BadZipFile as exc:
            raise OSError(f"corrupt in the zip ({exc}; a zip bomb lies about sizes)") from None
        except (zlib.error, EOFError) as exc:
            raise OSError(f"cannot be decompressed ({exc})") from None
        except (NotImplementedError, RuntimeError) as exc:
            raise OSError(f"cannot be read from the zip ({exc})") from None
        if len(data) > MAX_MEMBER_BYTES:
            raise OSError("it is larger than 50 MiB once decompressed")
        return data

    return read


# ---------------------------------------------------------------- reading names per layout


@dataclass
class Parsed:
    """What a notebook's name says: who, which file, how recent."""

    student: str
    file: str  # the notebook's own name: LMS prefixes and resubmission suffixes removed
    lesson: str | None = None
    identity: tuple = ()  # same student id, different identity: two people merged into one
    attempt: tuple = ()  # a newer attempt supersedes every file of older ones
    version: tuple = ()  # a newer version of a file supersedes its older copies
    name: str = ""  # the person's name where the LMS writes it
    lms_id: str = ""  # the LMS's own number for the student, where it gives one


@dataclass
class Context:
    lesson: str | None
    lessons: list[str]
    pattern: re.Pattern | None = None
    gradescope: dict | None = None  # folder -> metadata record
    gradescope_problem: str | None = None


RESUBMITTED = re.compile(
    r"^(?P<stem>.+?)(?: ?\((?P<paren>\d+)\)|-(?P<dash>\d+))?(?P<ext>\.ipynb)$", re.I
)
CANVAS = re.compile(
    r"^(?P<name>[^_]+)_(?P<late>late_)?(?P<uid>\d+)_(?P<fid>\d+)_(?P<file>.+)$", re.I
)
MOODLE = re.compile(
    r"^(?P<name>[^_/]+)_(?P<pid>\d+)_assignsubmission_(?P<plugin>[a-z]+)_(?P<file>.*)$"
)
MOODLE_DIR = re.compile(r"^(?P<name>[^_/]+)_(?P<pid>\d+)_assignsubmission_(?P<plugin>[a-z]+)_?$")
BLACKBOARD = re.compile(
    r"^(?P<assignment>.+)_(?P<user>[^_]+)_attempt_"
    r"(?P<at>\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2})(?:_(?P<file>.+))?$"
)
BRIGHTSPACE = re.compile(
    r"^(?P<sub>\d+-\d+) - (?P<name>.+?) - "
    r"(?P<at>[A-Z][a-z]{2} \d{1,2}, \d{4} \d{3,4} [AP]M) - (?P<file>.+)$"
)
GRADESCOPE_DIR = re.compile(r"^submission_\d+$")


def _resubmission(file: str) -> tuple[str, int]:
    """('softmax.ipynb', 2) for 'softmax (2).ipynb' or 'softmax-2.ipynb'."""
    match = RESUBMITTED.match(file)
    if not match:
        return file, 0
    number = match.group("paren") or match.group("dash") or 0
    return match.group("stem") + match.group("ext"), int(number)


def _canvas(parts, ctx) -> list[Parsed] | str:
    match = CANVAS.match(parts[-1])
    if len(parts) != 1 or not match:
        return "not Canvas's name_userid_fileid_file.ipynb"
    file, again = _resubmission(match["file"])
    name, uid = match["name"], match["uid"]
    return [
        Parsed(
            f"{name}_{uid}",
            file,
            identity=(uid,),
            version=(int(match["fid"]), again),
            name=name,
            lms_id=uid,
        )
    ]


def _moodle(parts, ctx) -> list[Parsed] | str:
    folder = MOODLE_DIR.match(parts[0]) if len(parts) > 1 else None
    match = folder or (MOODLE.match(parts[0]) if len(parts) == 1 else None)
    if not match:
        return "not Moodle's 'Full Name_<id>_assignsubmission_file_<file>'"
    file = parts[-1] if folder else match["file"]
    name = match["name"].strip()
    return [Parsed(name, file, identity=(match["pid"],), name=name, lms_id=match["pid"])]


def _blackboard(parts, ctx) -> list[Parsed] | str:
    match = BLACKBOARD.match(parts[-1])
    if len(parts) != 1 or not match or not match["file"]:
        return "not Blackboard's assignment_user_attempt_YYYY-MM-DD-HH-MM-SS_file"
    user = match["user"]
    return [Parsed(user, match["file"], identity=(user,), attempt=(match["at"],), lms_id=user)]


def _brightspace(parts, ctx) -> list[Parsed] | str:
    match = BRIGHTSPACE.match(parts[-1])
    if len(parts) != 1 or not match:
        return "not Brightspace's 'n-n - Name - Mon DD, YYYY HHMM AM - file'"
    try:
        at = datetime.strptime(match["at"], "%b %d, %Y %I%M %p").isoformat()
    except ValueError:
        at = match["at"]
    name = match["name"].strip()
    # Files of one submission share its number and time; a later submission supersedes them.
    return [Parsed(name, match["file"], identity=(name,), attempt=(at, match["sub"]), name=name)]


def _gradescope(parts, ctx) -> list[Parsed] | str:
    if ctx.gradescope is None:
        return ctx.gradescope_problem or "no submission_metadata.yml in the export"
    folder = next((p for p in parts[:-1] if GRADESCOPE_DIR.match(p)), None)
    if folder is None:
        return "not inside a submission_<number>/ folder"
    record = ctx.gradescope.get(folder)
    if not isinstance(record, dict):
        return f"{folder} is not listed in submission_metadata.yml"
    submitters = record.get("submitters") or []
    parsed = []
    for person in submitters if isinstance(submitters, list) else []:
        if not isinstance(person, dict):
            continue
        sid, email, name = (str(person.get(k) or "").strip() for k in ("sid", "email", "name"))
        student = sid or email or name
        if student:
            at = (str(record.get("created_at", "")), folder)
            parsed.append(
                Parsed(student, parts[-1], identity=(student,), attempt=at, name=name, lms_id=sid)
            )
    return parsed or f"{folder} lists no submitter with an id in submission_metadata.yml"


def _folder(parts, ctx) -> list[Parsed] | str:
    known = ", ".join(ctx.lessons)
    if len(parts) != 3 or parts[1] not in ctx.lessons:
        hint = "" if ctx.lesson else "; an LMS export needs --lesson"
        return f"expected <student>/<lesson>/<notebook>.ipynb with a known lesson ({known}){hint}"
    if ctx.lesson and parts[1] != ctx.lesson:
        return f"lesson {parts[1]} is not the one being collected (--lesson {ctx.lesson})"
    return [Parsed(parts[0], parts[2], lesson=parts[1], identity=(parts[0],))]


def _pattern_match(pattern: re.Pattern, parts) -> re.Match | None:
    for text in (parts[-1], "/".join(parts)):
        match = pattern.search(text)
        if match and match.groupdict().get("student"):
            return match
    return None


def _generic(parts, ctx) -> list[Parsed] | str:
    pattern = ctx.pattern or re.compile(DEFAULT_ID_PATTERN)
    match = _pattern_match(pattern, parts)
    if match is None:
        return f"no student id in its name (--id-pattern {pattern.pattern!r})"
    base, again = _resubmission(parts[-1])
    student = match["student"]
    # A pattern the instructor gave is trusted; the default's first field is only a guess.
    identity = (student,) if ctx.pattern else (base,)
    return [Parsed(student, base, identity=identity, version=(again,))]


PARSERS = {
    "gradescope": _gradescope,
    "moodle": _moodle,
    "canvas": _canvas,
    "blackboard": _blackboard,
    "brightspace": _brightspace,
    "folder": _folder,
    "generic": _generic,
}

# Suggested --id-pattern per layout when its ids merge people, tried before the generic ones.
SUGGESTIONS = {
    "moodle": [r"^(?P<student>[^_/]+_\d+)_assignsubmission_"],
}
GENERIC_SUGGESTIONS = [
    r"^(?P<student>[^_]+)_",
    r"^(?P<student>[^_]+_\d+)_",
    r"^(?P<student>[^_]+_[^_]+)_",
    r"^(?P<student>[^-]+)-",
    r"^(?P<student>[^ ]+) ",
]


def _receipt(member: Member) -> str | None:
    """Why a non-notebook file of an LMS export is expected there, if it is."""
    base = member.parts[-1] if member.parts else member.name
    if base == "submission_metadata.yml":
        return "Gradescope's list of submissions (read for the student ids)"
    if base.lower() == "index.html" and len(member.parts) <= 1:
        return "Brightspace's index page"
    if base.endswith(".txt") and BLACKBOARD.match(base[:-4]):
        return "Blackboard's submission receipt"
    if "_assignsubmission_onlinetext_" in member.name:
        return "Moodle's online text (not a notebook)"
    return None


# ---------------------------------------------------------------- the plan


@dataclass
class Entry:
    member: Member
    outcome: str = "skipped"  # "imported", "skipped" or "folder"
    reason: str = ""
    parsed: Parsed | None = None
    student: str | None = None
    lesson: str | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = {"member": self.member.name, "kind": self.member.kind}
        if self.member.kind == "file":
            out["size"] = self.member.size
        out["outcome"] = self.outcome
        if self.reason:
            out["reason"] = self.reason
        if self.student is not None:
            out["student"] = self.student
        if self.lesson is not None:
            out["lesson"] = self.lesson
        if self.parsed is not None:
            out.update(
                {k: v for k, v in (("name", self.parsed.name), ("lms_id", self.parsed.lms_id)) if v}
            )
        out.update(self.extra)
        return out


@dataclass
class CollectReport:
    """One collect run: what was offered, what was imported, what was not and why."""

    run: int
    source: str
    layout: str
    detected: bool
    lesson: str | None
    replace: bool
    id_pattern: str | None = None
    entries: list[dict] = field(default_factory=list)
    removed: list[dict] = field(default_factory=list)
    status: str = "done"
    reason: str = ""
    at: float = field(default_factory=time.time)

    @property
    def imported(self) -> list[dict]:
        return [e for e in self.entries if e["outcome"] == "imported"]

    @property
    def problems(self) -> list[dict]:
        return [e for e in self.entries if e["outcome"] not in ("imported", "folder")]

    def to_dict(self) -> dict:
        return {
            "run": self.run,
            "at": self.at,
            "source": self.source,
            "layout": self.layout,
            "detected": self.detected,
            "lesson": self.lesson,
            "replace": self.replace,
            "id_pattern": self.id_pattern,
            "status": self.status,
            "reason": self.reason,
            "removed": self.removed,
            "entries": self.entries,
        }

    def summary(self) -> str:
        how = "auto-detected" if self.detected else "as asked"
        if self.id_pattern:
            how = f"ids by --id-pattern {self.id_pattern!r}"
        lines = [f"collect #{self.run} from {self.source} (layout {self.layout}, {how})"]
        students = {e["student"] for e in self.imported}
        lines.append(f"imported {len(self.imported)} notebook(s) for {len(students)} student(s)")
        for entry in self.imported:
            if entry.get("unreadable"):
                lines.append(
                    f"  unreadable (graded as 0): {entry['member']}: {entry['unreadable']}"
                )
        if self.problems:
            lines.append(f"not imported ({len(self.problems)}):")
            lines += [f"  {e['member']}: {e['reason']}" for e in self.problems]
        if self.removed:
            gone = ", ".join(f"{r['student']}/{r['lesson']}" for r in self.removed)
            lines.append(f"removed by --replace ({len(self.removed)}): {gone}")
        return "\n".join(lines)


def _expected(lesson: str) -> list[str]:
    return sorted(p.name for p in (REPO / "solutions" / lesson).glob("*.ipynb"))


def _has_wrapper(members: list[Member]) -> bool:
    """One folder holds the whole export (a re-zipped or unzipped download)."""
    files = [m for m in members if m.kind != "dir" and not m.name.startswith("__MACOSX")]
    tops = {PurePosixPath(m.name).parts[0] for m in files if PurePosixPath(m.name).parts}
    return len(tops) == 1 and all(len(PurePosixPath(m.name).parts) > 1 for m in files)


def _set_parts(members: list[Member], wrapped: bool) -> list[Member]:
    for m in members:
        parts = PurePosixPath(m.name).parts
        m.parts = parts[1:] if wrapped and len(parts) > 1 else parts
    return members


def _classify(member: Member) -> str | None:
    """Why the file `member` can never be a notebook of the export, or None for a candidate.

    Files that are not `.ipynb` pass: the layout may know them (receipts, metadata).
    """
    if member.problem:
        return member.problem
    if not member.parts:
        return "an empty name"
    *folders, last = member.parts
    for part in folders:
        if part in (".ipynb_checkpoints", "__MACOSX") or part.startswith("."):
            return f"inside {part}/: " + submissions.junk_reason(part, is_dir=True)
    if member.kind == "symlink":
        return "a symbolic link (never followed)"
    if member.kind != "file":
        return "not a regular file"
    if last.startswith(".") or last.endswith("-checkpoint.ipynb"):
        return submissions.junk_reason(last)
    if member.size > MAX_MEMBER_BYTES:
        return f"larger than 50 MiB ({member.size / 2**20:.0f} MiB)"
    return None


def _notebooks(members: list[Member]) -> list[Member]:
    return [
        m
        for m in members
        if m.kind != "dir" and _classify(m) is None and m.parts[-1].lower().endswith(".ipynb")
    ]


def _score(members: list[Member], layout: str, ctx: Context) -> int:
    parse = PARSERS[layout]
    return sum(1 for m in _notebooks(members) if isinstance(parse(m.parts, ctx), list))


def _detect(
    members: list[Member], ctx: Context, layouts: tuple[str, ...], fallback: bool = True
) -> tuple[str, int]:
    """The layout (and wrapper choice) that reads the most notebook names.

    Sets each member's `parts` to the better reading: with or without a folder that wraps
    the whole export. With `fallback`, a layout must read at least half of the notebooks,
    else the generic one is used. Returns (layout, notebooks it reads).
    """
    total = len(_notebooks(_set_parts(members, wrapped=False)))
    best = (layouts[0] if not fallback else "generic", 0, False)
    for wrapped in (False, True) if _has_wrapper(members) else (False,):
        _set_parts(members, wrapped)
        for layout in layouts:
            score = _score(members, layout, ctx)
            if score > best[1]:
                best = (layout, score, wrapped)
    layout, score, wrapped = best
    if fallback and layout != "generic" and score * 2 < total:
        layout, score, wrapped = "generic", 0, False
    _set_parts(members, wrapped)
    return layout, score


def _load_gradescope(members: list[Member], ctx: Context) -> None:
    named = [m for m in members if m.kind == "file" and m.parts]
    found = sorted(
        (m for m in named if m.parts[-1] == "submission_metadata.yml"), key=lambda m: len(m.parts)
    )
    if not found:
        return
    import yaml  # PyYAML: a dependency of nbgrader

    meta = found[0]
    try:
        if meta.size > MAX_METADATA_BYTES:
            raise ValueError("larger than 10 MiB")
        data = yaml.safe_load(meta.read())
        if not isinstance(data, dict):
            raise ValueError("not a mapping of submission folders")
    except (OSError, ValueError, yaml.YAMLError) as exc:
        ctx.gradescope_problem = f"submission_metadata.yml is unreadable ({str(exc)[:120]})"
        return
    ctx.gradescope = {str(k): _plain_keys(v) for k, v in data.items()}


def _plain_keys(value):
    """Gradescope writes Ruby symbols as keys (':sid:'); YAML reads them as ':sid'."""
    if isinstance(value, dict):
        return {str(k).lstrip(":"): _plain_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_keys(v) for v in value]
    return value


class Planner:
    """Decides, before anything is written, what each member of the source becomes.

    `plan` fills `entries` (one per member, two for a member two students share) and
    `chosen`: {(student, lesson): {expected notebook name: (entry, staged file)}}.
    """

    def __init__(self, members: list[Member], layout: str, ctx: Context):
        self.members, self.layout, self.ctx = members, layout, ctx
        self.entries = [Entry(m) for m in members]
        self.chosen: dict[tuple[str, str], dict[str, tuple[Entry, Path]]] = {}
        self.read_bytes = 0

    def plan(self, stage: Path) -> None:
        rows = self._parse()
        if self.layout == "moodle":
            _blind_marking(rows)
        rows = self._check_ids(rows)
        self._check_merged(rows)
        groups = defaultdict(list)
        for entry in rows:
            groups[(entry.student, entry.lesson)].append(entry)
        for number, ((student, lesson), group) in enumerate(sorted(groups.items())):
            folder = stage / str(number)
            folder.mkdir()
            self._choose(student, lesson, self._supersede(group), folder)

    # -- names

    def _parse(self) -> list[Entry]:
        holding = {
            "/".join(PurePosixPath(m.name).parts[:i])
            for m in self.members
            for i in range(1, len(PurePosixPath(m.name).parts))
        }
        parse, rows = PARSERS[self.layout], []
        for entry in list(self.entries):
            member = entry.member
            if member.kind == "dir" and member.problem is None:
                if member.name in holding:
                    entry.outcome = "folder"
                else:
                    entry.reason = "an empty folder: nothing was submitted in it"
                continue
            reason = _classify(member)
            if reason is None and not member.parts[-1].lower().endswith(".ipynb"):
                reason = _receipt(member) or "not a notebook (.ipynb)"
            if reason is None:
                parsed = parse(member.parts, self.ctx)
                if isinstance(parsed, str):
                    reason = f"its name does not fit the {self.layout} layout: {parsed}"
            if reason:
                entry.reason = reason
                continue
            for i, one in enumerate(parsed):
                row = entry if i == 0 else self._twin(entry)
                row.parsed, row.lesson = one, one.lesson or self.ctx.lesson
                rows.append(row)
        return rows

    def _twin(self, entry: Entry) -> Entry:
        """A second entry for the same member (a group submission on Gradescope)."""
        twin = Entry(entry.member)
        self.entries.append(twin)
        return twin

    def _check_ids(self, rows: list[Entry]) -> list[Entry]:
        usable = []
        for entry in rows:
            raw = entry.parsed.student
            problem = submissions.student_id_problem(submissions.normalize_id(raw))
            if problem:
                entry.reason = f"unusable student id {raw!r}: {problem}"
            else:
                entry.student = submissions.normalize_id(raw)
                usable.append(entry)
        forms = defaultdict(set)
        for entry in usable:
            forms[entry.student.casefold()].add(entry.parsed.student)
        kept = []
        for entry in usable:
            clash = sorted(forms[entry.student.casefold()] - {entry.parsed.student})
            if clash:
                entry.reason = (
                    f"student id {entry.parsed.student!r} differs from {clash[0]!r} of the same "
                    "collect only by case or Unicode normalisation; rename one and collect again"
                )
                entry.student = None
            else:
                kept.append(entry)
        return kept

    def _check_merged(self, rows: list[Entry]) -> None:
        """Stop when one student id holds files whose names say they are different people."""
        identities = defaultdict(dict)
        for entry in rows:
            identities[(entry.student, entry.lesson)].setdefault(entry.parsed.identity, entry)
        merged = [list(found.values()) for found in identities.values() if len(found) > 1]
        if not merged:
            return
        for group in merged:
            for entry in group:
                entry.reason = f"another person's file has the same student id {entry.student!r}"
        first = merged[0]
        names = " and ".join(repr(e.member.name) for e in first[:2])
        more = f" (and {len(merged) - 1} more id(s))" if len(merged) > 1 else ""
        pattern = self._suggest(rows, merged)
        fix = (
            f"rerun with --id-pattern '{pattern}' to tell them apart"
            if pattern
            else "rerun with an --id-pattern whose (?P<student>...) group tells them apart"
        )
        if self.layout == "generic":
            fix += f", or with --id-pattern '{DEFAULT_ID_PATTERN}' if they are one student's"
        raise CollectStopped(
            f"{names} map to one student id {first[0].student!r} but their names say they are "
            f"different people{more}; nothing was imported: {fix}"
        )

    def _suggest(self, rows: list[Entry], merged: list[list[Entry]]) -> str | None:
        """The first candidate --id-pattern that reads every notebook and splits every clash."""
        for candidate in SUGGESTIONS.get(self.layout, []) + GENERIC_SUGGESTIONS:
            pattern = re.compile(candidate)
            ids = {e.member.name: _pattern_match(pattern, e.member.parts) for e in rows}
            if any(match is None for match in ids.values()):
                continue
            if all(
                len({ids[e.member.name]["student"] for e in group}) == len(group)
                for group in merged
            ):
                return candidate
        return None

    # -- resubmissions and the choice

    def _supersede(self, group: list[Entry]) -> list[Entry]:
        """The newest attempt's files, each in its newest copy; the rest get their reason."""
        newest = max(e.parsed.attempt for e in group)
        latest = []
        for entry in group:
            if entry.parsed.attempt == newest:
                latest.append(entry)
            else:
                entry.reason = f"an older attempt ({entry.parsed.attempt[0]}; newest {newest[0]})"
        copies = defaultdict(list)
        for entry in latest:
            copies[entry.parsed.file].append(entry)
        kept = []
        for same in copies.values():
            same.sort(key=lambda e: (e.parsed.version, e.member.mtime, e.member.name))
            for older in same[:-1]:
                older.reason = f"an older copy of {older.parsed.file} (kept {same[-1].member.name})"
            kept.append(same[-1])
        return kept

    def _choose(self, student: str, lesson: str, group: list[Entry], folder: Path) -> None:
        """Stage the group's notebooks in `folder` and let `choose_notebook` pick per name."""
        staged: dict[str, Entry] = {}
        for entry in group:
            try:
                data = self._read(entry.member)
            except OSError as exc:
                entry.reason = f"cannot be read: {exc}"
                continue
            name = _stage_name(entry.parsed.file, staged)
            (folder / name).write_bytes(data)
            os.utime(folder / name, (entry.member.mtime, entry.member.mtime))
            staged[name] = entry
        winners: dict[str, tuple[Entry, Path]] = {}
        why: dict[str, str] = {}
        for expected in _expected(lesson):
            choice = submissions.choose_notebook(folder, expected, lesson)
            if choice.path is not None:
                entry = staged[choice.path.name]
                winners[expected] = (entry, choice.path)
                entry.outcome = "imported"
                entry.extra.setdefault("notebook", expected)
                entry.extra.setdefault("as", f"submitted/{student}/{lesson}/{expected}")
                if choice.note:
                    entry.extra.setdefault("note", choice.note)
            for name, reason in choice.ignored:
                why.setdefault(name, reason)
        graded = ", ".join(sorted({e.member.name for e, _ in winners.values()})) or "nothing"
        for name, entry in staged.items():
            if entry.outcome != "imported":
                entry.reason = f"not graded: {why.get(name, 'not chosen')} (graded: {graded})"
        if winners:
            self.chosen[(student, lesson)] = winners

    def _read(self, member: Member) -> bytes:
        self.read_bytes += member.size
        if self.read_bytes > MAX_TOTAL_BYTES:
            raise OSError("the export passed the 2 GiB cap on what one collect reads")
        return member.read()


def _blind_marking(rows: list[Entry]) -> None:
    """Under Moodle's blind marking every file is "Participant_<number>_...": keep the number.

    One shared one-word name stands for blind marking; two people with one full name (which
    has a space) stop the collect instead, as any other merge.
    """
    names = {row.parsed.name for row in rows}
    one_word = len(names) == 1 and not any(c.isspace() for c in next(iter(names)))
    if one_word and len({row.parsed.lms_id for row in rows}) > 1:
        for row in rows:
            row.parsed.student = f"{row.parsed.name}_{row.parsed.lms_id}"


def _stage_name(file: str, taken: dict) -> str:
    """A file name for the staging folder: the notebook's own name when it is safe there."""
    name = PurePosixPath(file.replace("\\", "/")).name
    if (
        not name
        or len(name.encode("utf-8", "replace")) > 200
        or any(unicodedata.category(c) == "Cc" for c in name)
    ):
        name = f"notebook-{len(taken)}.ipynb"
    while name in taken:
        name = f"copy-{len(taken)}-{name}"
    return name


# ---------------------------------------------------------------- writing


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".collect.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"another collect is writing into {root}; wait for it") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write(root: Path, chosen: dict, replace: bool) -> list[dict]:
    """Copy the chosen notebooks into submitted/; returns what `replace` took out.

    Without `replace`, each collected (student, lesson) folder is emptied first, so an
    earlier collect's files cannot compete with the new one. With `replace` the new set is
    built beside submitted/ and swapped in, so nothing else stays.
    """
    target = root / ("submitted.new" if replace else "submitted")
    shutil.rmtree(root / "submitted.new", ignore_errors=True)
    for (student, lesson), winners in chosen.items():
        folder = target / student / lesson
        if folder.exists():
            shutil.rmtree(folder)
            for entry, _ in winners.values():
                entry.extra["replaced_earlier"] = True
        folder.mkdir(parents=True)
        for expected, (entry, staged) in winners.items():
            shutil.copyfile(staged, folder / expected)
            os.utime(folder / expected, (entry.member.mtime, entry.member.mtime))
    if not replace:
        return []
    gone = sorted(submissions.current_submissions(root) - set(chosen))
    old = root / "submitted.old"
    shutil.rmtree(old, ignore_errors=True)
    if (root / "submitted").exists():
        os.rename(root / "submitted", old)
    target.mkdir(parents=True, exist_ok=True)
    os.rename(target, root / "submitted")
    shutil.rmtree(old, ignore_errors=True)
    return [{"student": student, "lesson": lesson} for student, lesson in gone]


def _check_imported(root: Path, entries: list[Entry]) -> None:
    """Note the imported notebooks the grader will report as unreadable."""
    for entry in entries:
        if entry.outcome == "imported":
            try:
                submissions.load_notebook(root / entry.extra["as"])
            except UnreadableNotebook as exc:
                entry.extra["unreadable"] = str(exc)


def _append_ledger(root: Path, report: CollectReport) -> None:
    path = submissions.ledger_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(report.to_dict(), ensure_ascii=False) + "\n")
    # The latest run alone, where earlier versions wrote it; the ledger keeps them all.
    (root / "reports" / "collect.json").write_text(
        json.dumps(report.to_dict(), indent=1, ensure_ascii=False), encoding="utf-8"
    )


# ---------------------------------------------------------------- entry point


@contextmanager
def _members(source: Path) -> Iterator[list[Member]]:
    if source.is_dir():
        yield _folder_members(source)
        return
    if not source.exists():
        raise FileNotFoundError(f"{source} does not exist")
    if not zipfile.is_zipfile(source):
        raise ValueError(f"{source} is neither a folder nor a zip file")
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValueError(f"{source} is not a readable zip ({exc})") from None
    with archive:
        yield _zip_members(archive)


def collect(
    source: Path,
    root: Path,
    lessons: list[str],
    lesson: str | None = None,
    id_pattern: str | None = None,
    replace: bool = False,
    layout: str = "auto",
) -> CollectReport:
    """Import the notebooks of `source` (a folder or a zip) into `root`/submitted.

    lessons: the known lesson folders; lesson: the lesson an LMS export holds (required
    for every layout but `folder`); id_pattern: a regex with a (?P<student>...) group,
    searched in each file name (then in its path); replace: submitted/ afterwards holds
    exactly this collect's submissions (the ledger records who was removed); layout: one
    of `LAYOUTS` or "auto". Returns the run's report, also appended to the ledger. Raises
    ValueError (one line) for a bad argument or source, FileNotFoundError for a missing
    one, and CollectStopped (nothing written, the run still recorded) when two people map
    to one student id.
    """
    source, root = Path(source).resolve(), Path(root).resolve()
    if (root / "submitted") in (source, *source.parents):
        raise ValueError(f"{source} is inside {root / 'submitted'}: collect from elsewhere")
    if source in (root, *root.parents):
        raise ValueError(f"{source} holds the grading folder {root}: collect from a sub-folder")
    if lesson is not None and lesson not in lessons:
        raise ValueError(f"unknown lesson {lesson}; known: {', '.join(lessons)}")
    pattern = _compile(id_pattern)
    if pattern is not None and layout not in ("auto", "generic"):
        raise ValueError("--id-pattern reads ids from file names: do not combine it with --layout")
    if layout not in ("auto", *LAYOUTS):
        raise ValueError(f"unknown layout {layout}; known: auto, {', '.join(LAYOUTS)}")
    ctx = Context(lesson, list(lessons), pattern)
    with _locked(root), _members(source) as members, tempfile.TemporaryDirectory() as stage:
        _load_gradescope(_set_parts(members, _has_wrapper(members)), ctx)
        detected = layout == "auto" and pattern is None
        if pattern is not None:
            layout = "generic"
        chosen, _ = _detect(members, ctx, LAYOUTS[:-1] if detected else (layout,), detected)
        if chosen != "folder" and lesson is None:
            if chosen != "generic" or not detected:
                raise ValueError(f"a {chosen} export holds one lesson: say which with --lesson")
            chosen = "folder"  # no layout reads the names: each file is listed with its reason
        report = CollectReport(
            _next_run(root), str(source), chosen, detected, lesson, replace, id_pattern
        )
        planner = Planner(members, chosen, ctx)
        try:
            planner.plan(Path(stage))
        except CollectStopped as exc:
            report.status, report.reason = "stopped", str(exc)
            report.entries = [e.to_dict() for e in planner.entries]
            _append_ledger(root, report)
            raise
        report.removed = _write(root, planner.chosen, replace)
        _check_imported(root, planner.entries)
        report.entries = [e.to_dict() for e in planner.entries]
        _append_ledger(root, report)
    return report


def _compile(id_pattern: str | None) -> re.Pattern | None:
    if id_pattern is None:
        return None
    try:
        pattern = re.compile(id_pattern)
    except re.error as exc:
        raise ValueError(f"--id-pattern {id_pattern!r} is not a valid regex ({exc})") from None
    if "student" not in pattern.groupindex:
        raise ValueError(f"--id-pattern {id_pattern!r} has no (?P<student>...) group")
    return pattern


def _next_run(root: Path) -> int:
    runs = [r.get("run") for r in submissions.collect_history(root)]
    return max([r for r in runs if isinstance(r, int)], default=0) + 1
