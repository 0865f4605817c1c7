"""Every lesson as a learner meets it: JupyterLab (`make lab`) in Chromium.

For each solutions/NN-*/*.ipynb: Run All from the menu, every cell runs without an error,
every widget renders (no "Error displaying widget", images actually decoded), each slider,
toggle, checkbox, dropdown and radio group is moved once and the widget's picture or
readout changes; then the nbgrader Validate button in the notebook toolbar reports success.

For the blank release of the first and the last lesson (course/NN-*/*.ipynb): Run All stops
at the first exercise with one clear "not written yet" message, rendered under that cell, and
nothing further down runs. Every lesson's blank release is held to the same outside the
browser (tests/test_unsolved_exercises.py); here the point is what the browser shows, which
is the same machinery in every lesson, so two lessons keep `make test` within its budget.

Screenshots of each lesson go to tests/_artifacts/screenshots/ (git-ignored).
Lessons are discovered from the folders, so a new lesson is covered without editing this.
"""

from __future__ import annotations

import re
import shutil
import warnings

import pytest

from tests.e2e.jupyterlab import (
    IMAGES_LOADED,
    NB,
    REPO,
    VALIDATE_TIMEOUT_S,
    WIDGET_MIME,
    WIDGET_SIGNATURE,
    cells,
    controls_of,
    describe,
    error_text,
    errors,
    figures_missing,
    idle_count,
    lesson_notebooks,
    open_notebook,
    operate,
    reopen_notebook,
    run_all,
    screenshot,
    scroll_to_cell,
    stderr_outputs,
    wait_handled,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(480)]

SOLUTIONS = lesson_notebooks("solutions")
COURSE = lesson_notebooks("course")
COURSE = sorted({COURSE[0], COURSE[-1]}) if COURSE else []  # see the module's docstring
# Top-level widget outputs of cells (not widgets shown inside an Output widget).
WIDGET_OUTPUTS = (
    ".jp-Cell-outputArea > .jp-OutputArea-child > .jp-OutputArea-output:has(> .jupyter-widgets)"
)
FIGURES = (
    '.jp-Cell-outputArea > .jp-OutputArea-child > .jp-OutputArea-output[data-mime-type="image/png"]'
)
# What a widget shows when the learner's code failed inside it (course.widgets.base).
WIDGET_ERROR = re.compile(r"Your function raised|not written yet|Traceback", re.I)


# A notebook saved with its widgets' outputs, reopened after its kernel has gone: each explorer
# leaves its static copy (course.widgets.base) instead of "Error displaying widget".
STATIC_COPY = ".course-explorer-static"
DISABLED_ANCESTOR = """el => !!el.closest('[disabled], .mod-disabled') || (
    el.querySelectorAll('button').length > 0
    && [...el.querySelectorAll('button')].every(b => b.disabled))"""
SAVED = f"() => !{NB}.context.model.dirty"


def name_of(notebook) -> str:
    """solutions/01-softmax/softmax.ipynb -> solutions-01-softmax"""
    return f"{notebook.parts[0]}-{notebook.parts[1]}"


def ids(notebook) -> str:
    return notebook.parent.as_posix()


def expect():
    from playwright.sync_api import expect

    return expect


def validate_with_the_toolbar_button(page, notebook, name) -> None:
    """nbgrader's Validate button passes the solution notebook (it saves the notebook first)."""
    button = page.locator(".jp-NotebookPanel-toolbar .validate-button")
    expect()(button).to_be_enabled()
    button.click()
    dialog = page.locator(".jp-Dialog").filter(has_text="Validation Results")
    dialog.wait_for(timeout=VALIDATE_TIMEOUT_S * 1000)
    text = dialog.locator(".jp-Dialog-body").inner_text()
    screenshot(page, f"{name}-validate")
    assert "Success! Your notebook passes all the tests." in text, f"{notebook}:\n{text}"
    dialog.get_by_role("button", name="Ok").click()
    expect()(dialog).to_have_count(0)


@pytest.mark.skipif(not SOLUTIONS, reason="no lesson in solutions/")
@pytest.mark.parametrize("notebook", SOLUTIONS, ids=ids)
def test_solution_runs_its_widgets_respond_and_it_validates(page, lab, notebook):
    name = name_of(notebook)
    open_notebook(page, lab, notebook.as_posix(), workspace=name)
    expect()(page.locator(".jp-NotebookPanel-toolbar .validate-button")).to_be_visible()

    run_all(page)
    cell_list = cells(page)
    failures = [f"cell {i}: {error_text(o)[-1500:]}" for i, o in errors(cell_list)]
    assert not failures, f"{notebook}: Run All raised\n" + "\n\n".join(failures)
    not_run = [
        c["index"]
        for c in cell_list
        if c["type"] == "code" and c["source"].strip() and c["count"] is None
    ]
    assert not not_run, f"{notebook}: cells {not_run} did not run"
    noise = [f"cell {i}: {text[-500:]}" for i, text in stderr_outputs(cell_list)]
    assert not noise, f"{notebook}: a learner sees stderr output\n" + "\n".join(noise)
    blank = figures_missing(cell_list)
    assert not blank, f"{notebook}: cells {blank} draw with pyplot but show no image"

    # Static figures: every image/png output is an <img> the browser decoded.
    n_png = sum("image/png" in o.get("data", {}) for c in cell_list for o in c["outputs"])
    figures = page.locator(FIGURES)
    expect()(figures, f"{notebook}: figures not shown").to_have_count(n_png)
    for i in range(n_png):
        figures.nth(i).scroll_into_view_if_needed()
        page.wait_for_function(IMAGES_LOADED, arg=figures.nth(i).element_handle())

    # Widgets: each rendered (the widget manager found its model), then each control moved.
    manager = "is @jupyter-widgets/jupyterlab-manager enabled and matching ipywidgets?"
    expect()(
        page.get_by_text("Error displaying widget"), f"{notebook}: a widget failed ({manager})"
    ).to_have_count(0)
    widget_cells = [
        c["index"] for c in cell_list if any(WIDGET_MIME in o.get("data", {}) for o in c["outputs"])
    ]
    assert widget_cells, f"{notebook}: no widget displayed (every lesson has at least one)"
    widgets = page.locator(WIDGET_OUTPUTS)
    expect()(widgets, f"{notebook}: widgets not rendered ({manager})").to_have_count(
        len(widget_cells)
    )
    copies = page.locator(STATIC_COPY)
    expect()(copies).to_have_count(len(widget_cells))
    expect()(copies.first).to_be_hidden()  # hidden while the live widget is there
    first_copy = copies.first.inner_html()
    exercised = []
    for w in range(len(widget_cells)):
        widget = widgets.nth(w)
        widget.scroll_into_view_if_needed()
        root = widget.locator(".jupyter-widgets").first
        expect()(root).to_be_visible()
        handle = widget.element_handle()
        page.wait_for_function(IMAGES_LOADED, arg=handle, timeout=30_000)
        controls = controls_of(widget)
        assert controls, f"{notebook}: widget {w + 1} has no slider, toggle or menu to move"
        # A control may only matter in some state of the others (a padding length while
        # padding is off): one that changes nothing is tried again after all the others.
        queue = [(kind, control, 1) for kind, control in controls]
        while queue:
            kind, control, attempt = queue.pop(0)
            label = f"widget {w + 1} {kind} '{describe(control)}'"
            # A control the widget disabled for its current state (an ipywidgets slider marks
            # its track, not the handle): a learner could not move it either.
            if control.is_disabled() or control.evaluate(DISABLED_ANCESTOR):
                continue
            before, since = widget.evaluate(WIDGET_SIGNATURE), idle_count(page)
            operate(page, kind, control)
            try:
                wait_handled(page, since)
            except Exception as exc:  # noqa: BLE001 - turn a timeout into a clear failure
                raise AssertionError(
                    f"{notebook}: moving {label} reached no kernel, or the "
                    "kernel did not finish handling it within 60 s"
                ) from exc
            try:
                page.wait_for_function(
                    f"([root, before]) => ({WIDGET_SIGNATURE})(root) !== before",
                    arg=[handle, before],
                    timeout=5_000,
                    polling=100,
                )
            except Exception as exc:  # noqa: BLE001
                if attempt == 1:
                    queue.append((kind, control, 2))
                    continue
                raise AssertionError(
                    f"{notebook}: moving {label} did not change the widget's picture or "
                    "readout, even after every other control had been moved (a control "
                    "with no effect should be disabled or hidden)"
                ) from exc
            page.wait_for_function(IMAGES_LOADED, arg=handle, timeout=30_000)
            shown = widget.inner_text()
            assert not WIDGET_ERROR.search(shown), f"{notebook}: after moving {label}:\n{shown}"
            exercised.append(label if attempt == 1 else f"{label} (second try)")
        screenshot(page, f"{name}-widget{w + 1}", element=widget)

    scroll_to_cell(page, max(widget_cells[0] - 1, 0))
    screenshot(page, name)
    print(f"{notebook}: moved {len(exercised)} controls: " + "; ".join(exercised))

    if notebook == SOLUTIONS[0]:
        # nbgrader's toolbar button (once: what it runs, `nbgrader validate`, is checked for
        # every lesson by tests/test_lessons_nbgrader.py's plain nbgrader autograde): saves
        # the scratch copy, runs validate inside the server with the repository's
        # nbgrader_config.py, shows a dialog.
        validate_with_the_toolbar_button(page, notebook, name)
    else:
        page.keyboard.press("Control+s")
        page.wait_for_function(SAVED, timeout=30_000)

    # The static copies follow their widgets (moved above) and were saved by the validate
    # button: reopened after the kernel has gone, each explorer leaves its picture.
    assert copies.first.inner_html() != first_copy, f"{notebook}: the static copy did not follow"
    lab.shutdown_kernels()
    if notebook == SOLUTIONS[0]:
        # A new session: JupyterLab loaded again, as after a restart (seconds of browser CPU).
        open_notebook(page, lab, notebook.as_posix(), workspace=f"{name}-reopened")
    else:
        # The same session: the tab closed and opened again (JupyterLab then shows its own
        # "Loading widget..." above the copy: a new kernel never had the widget's model).
        reopen_notebook(page, notebook.as_posix())
    copy = page.locator(STATIC_COPY).first
    copy.scroll_into_view_if_needed()
    expect()(copy).to_be_visible()
    expect()(copy).to_contain_text("run this cell again")
    page.wait_for_function(IMAGES_LOADED, arg=copy.element_handle(), timeout=30_000)
    assert copy.locator("img").count() == 1, f"{notebook}: no picture in the static copy"
    assert copy.locator("style").count() == 1, f"{notebook}: the copy's style was removed"
    error = page.get_by_text("Error displaying widget")
    for i in range(error.count()):
        expect()(error.nth(i)).to_be_hidden()
    screenshot(
        page,
        f"{name}-widget-after-shutdown",
        element=copy.locator("xpath=ancestor::div[contains(@class,'jp-Cell-outputArea')]"),
    )
    shutil.copy(REPO / notebook, lab.root / notebook)  # later tests open it unsaved


@pytest.mark.skipif(not COURSE, reason="no lesson in course/")
@pytest.mark.parametrize("notebook", COURSE, ids=ids)
def test_blank_notebook_stops_with_a_clear_message_at_the_first_exercise(page, lab, notebook):
    name = name_of(notebook)
    open_notebook(page, lab, notebook.as_posix(), workspace=name)
    expect()(page.locator(".jp-NotebookPanel-toolbar .validate-button")).to_be_visible()
    expect()(page.locator(".jp-MarkdownCell h1").first).to_be_visible()

    run_all(page)
    cell_list = cells(page)
    exercises = [
        c["index"] for c in cell_list if c["type"] == "code" and c["nbgrader"].get("solution")
    ]
    assert exercises, f"{notebook}: no exercise cell (nbgrader solution cell)"
    found = errors(cell_list)
    assert found, f"{notebook}: Run All of the blank notebook raised nothing"
    index, output = found[0]
    text = error_text(output)
    end = exercises[1] if len(exercises) > 1 else len(cell_list)
    assert exercises[0] <= index < end, (
        f"{notebook}: the first error is in cell {index}, not at the first exercise "
        f"(cells {exercises[0]}..{end - 1}):\n{text}"
    )
    assert "not written yet" in text.lower(), f"{notebook}: unclear message:\n{text}"
    assert "Traceback" not in text and 'File "' not in text and len(text.splitlines()) <= 6, (
        f"{notebook}: a traceback instead of one clear message:\n{text}"
    )
    assert len(found) == 1, f"{notebook}: more than one error output: cells {[i for i, _ in found]}"
    before = [
        c["index"]
        for c in cell_list[:index]
        if c["type"] == "code" and c["source"].strip() and c["count"] is None
    ]
    assert not before, f"{notebook}: cells {before} before the first exercise did not run"
    blank = figures_missing(cell_list[:index])
    assert not blank, f"{notebook}: cells {blank} draw with pyplot but show no image"
    after = [c["index"] for c in cell_list[index + 1 :] if c["type"] == "code" and c["count"]]
    assert not after, f"{notebook}: cells {after} ran after the first unsolved exercise"

    # What the learner sees: the message, rendered under that cell.
    scroll_to_cell(page, max(index - 1, 0))
    shown = page.locator(".jp-Notebook .jp-Cell").nth(index).locator(".jp-OutputArea-output")
    expect()(shown.filter(has_text=re.compile("not written yet", re.I))).to_be_visible()
    screenshot(page, name)


def test_nbgrader_assignment_list_opens(page, lab):
    page.goto(f"{lab.base}/lab/workspaces/nbgrader?reset&token={lab.token}")
    page.get_by_role("menuitem", name="Nbgrader", exact=True).click()
    page.get_by_role("menuitem", name="Assignment List", exact=True).click()
    panel = page.locator("#nbgrader-assignment-list")
    expect()(panel).to_be_visible()
    for section in ["Released assignments", "Downloaded assignments", "Submitted assignments"]:
        expect()(panel).to_contain_text(section)
    expect()(panel.locator("#released_assignments_list_loading")).to_be_hidden(timeout=30_000)
    screenshot(page, "nbgrader-assignment-list")
    if "exchange directory does not exist" in panel.inner_text():
        warnings.warn(
            "the nbgrader Assignment List has no exchange directory to list "
            "(configure c.Exchange.root for a graded class)",
            stacklevel=1,
        )
