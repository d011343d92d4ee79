"""Python-literal lines (the Amazon 2014 metadata format), parsed fast and exactly.

:func:`parse_literal` equals :func:`ast.literal_eval` on every line (fuzz-tested against it),
but converts the common forms through the JSON parser, several times faster; anything it
cannot convert exactly falls back to ``literal_eval``.
"""
from __future__ import annotations

import ast
import json
import re
import warnings
from typing import Any

class _Fallback(Exception):
    """The fast path cannot vouch for this line; ask ast.literal_eval."""


_SIMPLE = r"'[^'\"\\\n]*'"  # a single-quoted string with no " and no backslash
_PREFIX = rf"(?:{_SIMPLE}|[^'\"A-Za-z_]|[eE])*"  # simple strings and structure (numbers, brackets)
_HARD = r"""'[^'\\\n]*(?:\\.[^'\\\n]*)*'|"[^"\\\n]*(?:\\.[^"\\\n]*)*"|\b(?:True|False|None|true|false|null|NaN|Infinity)\b"""
_SCAN = re.compile(rf"({_PREFIX})(?:({_HARD})|\Z)")
_WORDS = {"True": "true", "False": "false", "None": "null"}
_WORD_RE = re.compile(r"True|False|None|true|false|null|NaN|Infinity")


def _hard_to_json(tok: str) -> str:
    """JSON text, free of ``'``, for a string literal or a Python constant (others: fall back)."""
    q = tok[0]
    if q == '"' or q == "'":
        if "\\" not in tok:
            value = tok[1:-1]  # without escapes the text is the value
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # invalid escapes warn, as they would for the whole line
                value = ast.literal_eval(tok)  # a lone string literal
        return json.dumps(value, ensure_ascii=False).replace("'", "\\u0027")
    w = _WORDS.get(tok)
    if w is None:  # true/false/null/NaN/Infinity are not Python literals
        raise _Fallback
    return w


def _no_constants(name: str) -> Any:
    raise _Fallback


def _literal_to_json(line: str) -> str:
    """Rewrite a Python literal line into JSON text with the same value, or raise _Fallback.

    The scan must tile the whole line with (simple strings + structure)(hard token) steps;
    a gap means something JSON-foreign (a ``u''`` prefix, a name, ...), so: fall back.
    Hard tokens become JSON strings without ``'``; then every remaining ``'`` delimits a
    simple string and becomes ``"``.
    """
    pos = 0

    def repl(m: re.Match) -> str:
        nonlocal pos
        if m.start() != pos:
            raise _Fallback
        pos = m.end()
        tok = m.group(2)
        return m.group(1) if tok is None else m.group(1) + _hard_to_json(tok)

    text = _SCAN.sub(repl, line)
    if pos != len(line):
        raise _Fallback
    return text.replace("'", '"')


def parse_literal(line: str) -> Any:
    """``ast.literal_eval(line)`` for the dict/list/str/number lines of the 2014 meta files, fast.

    All paths give the value ``ast.literal_eval`` gives: (1) no ``"``, backslash or constant
    name in the line: every ``'`` delimits a string, so swapping it for ``"`` makes JSON;
    (2) otherwise :func:`_literal_to_json` rewrites string literals and constants; (3) what
    JSON rejects (tuples, ``u''``, int keys, trailing commas, ...) goes to ``ast.literal_eval``.
    Raises ValueError/SyntaxError (and friends) exactly when ``ast.literal_eval`` does.
    """
    if "\0" in line:  # Python refuses source with NUL bytes; let it say so
        return ast.literal_eval(line)
    try:
        if '"' not in line and "\\" not in line and _WORD_RE.search(line) is None:
            return json.loads(line.replace("'", '"'), parse_constant=_no_constants)
        return json.loads(_literal_to_json(line), parse_constant=_no_constants)
    except (_Fallback, ValueError, SyntaxError, RecursionError):
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ast.literal_eval(line)


