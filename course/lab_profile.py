"""Which nbgrader parts a JupyterLab started by `make lab` shows: `python -m course.lab_profile`.

nbgrader installs four JupyterLab extensions. A student needs the notebook toolbar's Validate
button; the Assignment List (fetch and submit) only works where an instructor has set up an
exchange directory; Create Assignment, Formgrader and Course List are the instructor's tools and
fail without the instructor's files. So:

* profile `instructor` (a checkout with `autograder/`): every nbgrader tool, even where a shared
  server's system-wide configuration sets up the student profile for everyone;
* profile `student` (the student bundle, or `make lab LAB_PROFILE=student`): Validate, plus the
  Assignment List only when the exchange directory nbgrader is configured with exists.

The profile is written as Jupyter configuration into a folder that `make lab` puts first on
`JUPYTER_CONFIG_PATH`: `labconfig/page_config.json` (front-end plugins) and
`jupyter_server_config.json` (server extensions). The repository's own files stay untouched.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

__all__ = ["PROFILES", "exchange_root", "student_config", "write_profile", "main"]

PROFILES = ("instructor", "student")
# nbgrader's JupyterLab plugins and server extensions (nbgrader 0.9).
_INSTRUCTOR_PLUGINS = [
    "@jupyter/nbgrader:create-assignment",
    "@jupyter/nbgrader:formgrader",
    "@jupyter/nbgrader:course-list",
]
_EXCHANGE_PLUGINS = ["@jupyter/nbgrader:assignment-list", "@jupyter/nbgrader:menu"]
_SERVER = "nbgrader.server_extensions."


def exchange_root(cwd: Path | str = ".") -> Path:
    """The exchange directory nbgrader would use when started in `cwd`: its configuration read
    as nbgrader's own server extension reads it (`cwd`, then every Jupyter config folder)."""
    from jupyter_core.paths import jupyter_config_path
    from nbgrader.apps import NbGrader
    from nbgrader.exchange.default.exchange import Exchange

    here = os.getcwd()
    try:
        os.chdir(cwd)
        app = NbGrader()
        app.config_file_paths.append([os.getcwd(), *jupyter_config_path()])
        app.load_config_file()
        return Path(Exchange(config=app.config).root)
    finally:
        os.chdir(here)


def _config(instructor: bool, has_exchange: bool) -> tuple[dict, dict]:
    """(page_config, server_config). Every nbgrader part is named, enabled or not, so that this
    folder (first on JUPYTER_CONFIG_PATH) overrides any other Jupyter configuration."""
    plugins = {name: not instructor for name in _INSTRUCTOR_PLUGINS}
    plugins.update({name: not (instructor or has_exchange) for name in _EXCHANGE_PLUGINS})
    plugins["@jupyter/nbgrader:validate-assignment"] = False
    server = {
        _SERVER + "validate_assignment": True,
        _SERVER + "assignment_list": instructor or has_exchange,
        _SERVER + "formgrader": instructor,
        _SERVER + "course_list": instructor,
    }
    return {"disabledExtensions": plugins}, {"ServerApp": {"jpserver_extensions": server}}


def student_config(has_exchange: bool) -> tuple[dict, dict]:
    """(page_config, server_config) for a student's JupyterLab."""
    return _config(instructor=False, has_exchange=has_exchange)


def write_profile(profile: str, folder: Path, cwd: Path | str = ".") -> str:
    """Write `profile`'s configuration into `folder` (replacing what was there); one line
    saying what the learner's JupyterLab will show."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}: choose one of {', '.join(PROFILES)}")
    instructor = profile == "instructor"
    root = None if instructor else exchange_root(cwd)
    has_exchange = root is not None and root.is_dir()
    page, server = _config(instructor, has_exchange)
    page_path = folder / "labconfig" / "page_config.json"
    page_path.parent.mkdir(parents=True, exist_ok=True)
    page_path.write_text(json.dumps(page, indent=1) + "\n")
    (folder / "jupyter_server_config.json").write_text(json.dumps(server, indent=1) + "\n")
    if instructor:
        return "==> JupyterLab (instructor): every nbgrader tool"
    if has_exchange:
        return f"==> JupyterLab (student): Validate button; Assignment List on the exchange {root}"
    return (
        f"==> JupyterLab (student): Validate button; no Assignment List (no nbgrader exchange at "
        f"{root}; see the README to set one up)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course.lab_profile", description=__doc__)
    parser.add_argument("profile", choices=PROFILES)
    parser.add_argument("folder", type=Path, help="the folder make lab puts on JUPYTER_CONFIG_PATH")
    args = parser.parse_args(argv)
    print(write_profile(args.profile, args.folder))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
