"""Digests of code, for the run store's keys (a stage's key, the report's stamp): a digest says *what the code
does*, not where it lives.

A module's digest is taken over its syntax tree with the import statements, the docstrings and the line numbers
left out (comments never reach the tree). So moving a module to another package, or renaming the modules it
imports from, keeps its digest; changing a statement, a default or a string it uses changes it. A set of modules
is digested in no particular order: listing them differently keeps the digest too.

    >>> a = "'Doc.'\\nfrom metareward.store import write\\ndef f(x):\\n    return write(x)  # saved\\n"
    >>> b = "from metareward.runstore.store import write\\n\\n\\ndef f(x):\\n    'Moved.'\\n    return write(x)\\n"
    >>> source_digest(a) == source_digest(b)
    True
    >>> source_digest(a) == source_digest(a.replace("return write(x)", "return write(x + 1)"))
    False
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
from collections.abc import Iterable
from pathlib import Path


class _Strip(ast.NodeTransformer):
    """Drops imports and docstrings, anywhere in the tree."""

    def visit_Import(self, node):
        return None

    visit_ImportFrom = visit_Import

    def generic_visit(self, node):
        super().generic_visit(node)
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body:
            first = body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value,
                                                                                                     str):
                body.pop(0)
        if isinstance(body, list) and not body and not isinstance(node, ast.Module):
            body.append(ast.Pass())  # a function that held only imports
        return node


@functools.lru_cache(maxsize=256)  # every stage key digests ~20 modules; a file's text is its cache key
def source_digest(source: str) -> str:
    """The digest of one module's source: its code without imports, docstrings, comments or layout."""
    tree = _Strip().visit(ast.parse(source))
    return hashlib.sha256(ast.dump(tree, annotate_fields=False, include_attributes=False).encode()).hexdigest()


def module_file(name: str) -> Path:
    """The source file of an importable module (``metareward.method.pairs``); ModuleNotFoundError when there is
    none, so a module renamed without updating a list of names fails loudly instead of dropping out."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise ModuleNotFoundError(f"{name}: no Python source to digest")
    return Path(spec.origin)


def code_digest(modules: Iterable[str]) -> str:
    """The digest of a set of modules' code (`source_digest` of each, in sorted order)."""
    parts = sorted({source_digest(module_file(m).read_text()) for m in modules})
    return hashlib.sha256("|".join(parts).encode()).hexdigest()
