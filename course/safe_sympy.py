"""Read a sympy expression back from its `srepr` text without `eval`.

A learner's expression crosses from the sandboxed kernel to the grader as text; sympy's own
parsers evaluate Python, so this one walks the syntax tree and builds only whitelisted sympy
classes from literal arguments. (Building can still be expensive: `Pow(Integer(3),
Integer(50000000))` evaluates a huge integer. The grader therefore compares sympy answers in a
child process with a time limit.)
"""

from __future__ import annotations

import ast

import sympy

ALLOWED = {
    "Add",
    "Mul",
    "Pow",
    "Symbol",
    "Dummy",
    "Integer",
    "Rational",
    "Float",
    "Abs",
    "exp",
    "log",
    "sqrt",
    "sin",
    "cos",
    "tan",
    "Max",
    "Min",
    "Sum",
    "Tuple",
    "Piecewise",
    "ExprCondPair",
    "Eq",
    "Ne",
    "Lt",
    "Le",
    "Gt",
    "Ge",
    "BooleanTrue",
    "BooleanFalse",
    "Half",
    "One",
    "Zero",
    "NegativeOne",
    "pi",
    "E",
    "oo",
    "zoo",
    "nan",
    "Expectation",
    "Variance",
    "Function",
    "AppliedUndef",
    "Derivative",
    "Indexed",
    "IndexedBase",
    "Idx",
    "KroneckerDelta",
}
MAX_CHARS = 100_000


def parse_srepr(text: str, _sympy=None) -> sympy.Basic:
    """The expression `text` (sympy's srepr form) describes; ValueError if it is anything else."""
    if not isinstance(text, str) or len(text) > MAX_CHARS:
        raise ValueError("expression text missing or too long")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not an srepr string: {exc.msg}") from None
    return _build(tree.body)


def _build(node: ast.AST):
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float | str | bool):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_build(node.operand)
    if isinstance(node, ast.Tuple | ast.List):
        return tuple(_build(e) for e in node.elts)
    if isinstance(node, ast.Name) and node.id in ALLOWED:
        return getattr(sympy, node.id)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ALLOWED:
        func = _sympy_callable(node.func.id)
        args = [_build(a) for a in node.args]
        kwargs = {k.arg: _build(k.value) for k in node.keywords if k.arg}
        return func(*args, **kwargs)
    raise ValueError(f"unexpected element {ast.dump(node)[:80]}")


def _sympy_callable(name: str):
    if name in ("Expectation", "Variance"):
        from sympy import stats

        return getattr(stats, name)
    return getattr(sympy, name)
