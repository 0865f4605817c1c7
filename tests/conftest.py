"""Suite-wide collection order: the longest test files first.

`make test` runs whole files side by side (`--dist loadfile`), handing them out in collection
order, so a long file that starts last decides when the run ends. Files with a test marked
`e2e` (a browser) come first, then files with a test marked `slow`, then the rest; the order
of the tests inside a file is kept.
"""

from __future__ import annotations

import pytest


def _weight(item: pytest.Item) -> int:
    marks = {mark.name for mark in item.iter_markers()}
    return 0 if "e2e" in marks else 1 if "slow" in marks else 2


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    by_file: dict[str, int] = {}
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        by_file[path] = min(by_file.get(path, 2), _weight(item))
    items.sort(key=lambda item: by_file[item.nodeid.split("::", 1)[0]])
