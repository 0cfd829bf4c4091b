"""Collect documentation text that ships with CPython (stdlib only, run as a script).

This file is executed in an isolated interpreter (``python -I -S _collect.py``) so that no
third-party package can change what gets imported or collected. It prints a JSON list of
``[group, text]`` documents to stdout, in a deterministic order. Documents are the pydoc
help topics, the docstrings of a fixed list of modules (their classes, methods, functions)
and the source text of those modules that are pure Python.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import json
import re
import sys
import warnings
from collections.abc import Iterator

# Fixed, sorted list of standard-library modules whose import has no side effects worth
# worrying about. Modules missing on a given Python version are skipped.
MODULES: tuple[str, ...] = (
    "abc",
    "argparse",
    "array",
    "ast",
    "asyncio",
    "asyncio.base_events",
    "asyncio.events",
    "asyncio.futures",
    "asyncio.locks",
    "asyncio.queues",
    "asyncio.streams",
    "asyncio.subprocess",
    "asyncio.tasks",
    "atexit",
    "base64",
    "bdb",
    "binascii",
    "bisect",
    "builtins",
    "bz2",
    "cProfile",
    "calendar",
    "cmath",
    "cmd",
    "code",
    "codecs",
    "codeop",
    "collections",
    "collections.abc",
    "colorsys",
    "compileall",
    "concurrent.futures",
    "configparser",
    "contextlib",
    "contextvars",
    "copy",
    "copyreg",
    "csv",
    "ctypes",
    "ctypes.util",
    "curses",
    "dataclasses",
    "datetime",
    "dbm",
    "dbm.dumb",
    "decimal",
    "difflib",
    "dis",
    "doctest",
    "email",
    "email.charset",
    "email.contentmanager",
    "email.encoders",
    "email.errors",
    "email.feedparser",
    "email.generator",
    "email.header",
    "email.headerregistry",
    "email.iterators",
    "email.message",
    "email.mime.application",
    "email.mime.base",
    "email.mime.multipart",
    "email.mime.text",
    "email.parser",
    "email.policy",
    "email.utils",
    "encodings",
    "encodings.idna",
    "enum",
    "errno",
    "faulthandler",
    "fcntl",
    "filecmp",
    "fileinput",
    "fnmatch",
    "fractions",
    "ftplib",
    "functools",
    "gc",
    "getopt",
    "getpass",
    "gettext",
    "glob",
    "graphlib",
    "grp",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "html",
    "html.entities",
    "html.parser",
    "http",
    "http.client",
    "http.cookiejar",
    "http.cookies",
    "http.server",
    "imaplib",
    "importlib",
    "importlib.abc",
    "importlib.machinery",
    "importlib.metadata",
    "importlib.resources",
    "importlib.util",
    "inspect",
    "io",
    "ipaddress",
    "itertools",
    "json",
    "json.decoder",
    "json.encoder",
    "keyword",
    "linecache",
    "locale",
    "logging",
    "logging.config",
    "logging.handlers",
    "lzma",
    "mailbox",
    "marshal",
    "math",
    "mimetypes",
    "mmap",
    "modulefinder",
    "multiprocessing",
    "multiprocessing.connection",
    "multiprocessing.managers",
    "multiprocessing.pool",
    "multiprocessing.queues",
    "multiprocessing.shared_memory",
    "netrc",
    "numbers",
    "opcode",
    "operator",
    "optparse",
    "os",
    "pathlib",
    "pdb",
    "pickle",
    "pickletools",
    "pkgutil",
    "platform",
    "plistlib",
    "poplib",
    "posix",
    "posixpath",
    "pprint",
    "profile",
    "pstats",
    "pty",
    "pwd",
    "py_compile",
    "pyclbr",
    "pydoc",
    "pyexpat",
    "queue",
    "quopri",
    "random",
    "re",
    "reprlib",
    "resource",
    "rlcompleter",
    "runpy",
    "sched",
    "secrets",
    "select",
    "selectors",
    "shelve",
    "shlex",
    "shutil",
    "signal",
    "smtplib",
    "socket",
    "socketserver",
    "sqlite3",
    "ssl",
    "stat",
    "statistics",
    "string",
    "stringprep",
    "struct",
    "subprocess",
    "symtable",
    "sys",
    "sysconfig",
    "syslog",
    "tabnanny",
    "tarfile",
    "tempfile",
    "termios",
    "textwrap",
    "threading",
    "time",
    "timeit",
    "token",
    "tokenize",
    "tomllib",
    "trace",
    "traceback",
    "tracemalloc",
    "tty",
    "types",
    "typing",
    "unicodedata",
    "unittest",
    "unittest.case",
    "unittest.mock",
    "unittest.result",
    "unittest.suite",
    "urllib",
    "urllib.error",
    "urllib.parse",
    "urllib.request",
    "urllib.response",
    "urllib.robotparser",
    "uuid",
    "warnings",
    "wave",
    "weakref",
    "webbrowser",
    "wsgiref",
    "wsgiref.handlers",
    "wsgiref.headers",
    "wsgiref.simple_server",
    "wsgiref.util",
    "wsgiref.validate",
    "xml",
    "xml.dom",
    "xml.dom.minidom",
    "xml.dom.pulldom",
    "xml.etree.ElementTree",
    "xml.parsers.expat",
    "xml.sax",
    "xml.sax.handler",
    "xml.sax.saxutils",
    "xml.sax.xmlreader",
    "xmlrpc",
    "xmlrpc.client",
    "xmlrpc.server",
    "zipapp",
    "zipfile",
    "zipimport",
    "zlib",
    "zoneinfo",
)

MIN_DOC_CHARS = 40
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _doc(obj: object) -> str:
    """Own docstring of obj (not inherited), cleaned, or ''."""
    try:
        raw = obj.__doc__
    except Exception:
        return ""
    if not isinstance(raw, str):
        return ""
    text = inspect.cleandoc(raw).strip()
    return "" if _ADDRESS.search(text) else text


def _signature(obj: object) -> str:
    try:
        sig = str(inspect.signature(obj))  # type: ignore[arg-type]
    except Exception:  # builtins without text signatures, odd C defaults
        return ""
    return "" if _ADDRESS.search(sig) else sig


def _class_document(qualname: str, cls: type) -> str:
    parts = []
    head = _doc(cls)
    if head:
        parts.append(f"class {qualname}{_signature(cls)}\n\n{head}")
    for name, member in sorted(vars(cls).items()):
        if name.startswith("__") and name != "__init__":
            continue
        func = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
        if not (callable(func) or isinstance(func, property)):
            continue
        text = _doc(func)
        if len(text) < MIN_DOC_CHARS:
            continue
        sig = _signature(func) if callable(func) else ""
        parts.append(f"{qualname}.{name}{sig}\n\n{text}")
    return "\n\n".join(parts)


def _module_source(module: object) -> str:
    """Source text of a pure-Python module, or '' for built-in/extension modules."""
    path = getattr(module, "__file__", None)
    if not isinstance(path, str) or not path.endswith(".py"):
        return ""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().replace("\r\n", "\n").strip()
    except (OSError, UnicodeDecodeError):
        return ""


def _module_documents(module_name: str, include_source: bool) -> Iterator[str]:
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            module = importlib.import_module(module_name)
        except Exception:
            return
        text = _doc(module)
        if len(text) >= MIN_DOC_CHARS:
            yield f"Module {module_name}\n\n{text}"
        for name, obj in sorted(vars(module).items()):
            if name.startswith("__"):
                continue
            if getattr(obj, "__module__", None) not in (module_name, "_" + module_name, None):
                continue  # re-exported from elsewhere: collected under its own module
            qualname = f"{module_name}.{name}"
            if inspect.isclass(obj):
                text = _class_document(qualname, obj)
            elif inspect.isroutine(obj):
                doc = _doc(obj)
                text = f"{qualname}{_signature(obj)}\n\n{doc}" if doc else ""
            else:
                continue
            if len(text) >= MIN_DOC_CHARS:
                yield text
        source = _module_source(module) if include_source else ""
        if len(source) >= MIN_DOC_CHARS:
            yield f"# Source of module {module_name}\n\n{source}"


def _topic_documents() -> Iterator[tuple[str, str]]:
    try:
        from pydoc_data.topics import topics
    except ImportError:
        return
    for key in sorted(topics):
        text = topics[key].strip()
        if len(text) >= MIN_DOC_CHARS:
            yield f"topic:{key}", text


def collect(
    modules: list[str] | None = None, include_topics: bool = True, include_source: bool = True
) -> list[tuple[str, str]]:
    """Return deduplicated ``(group, text)`` documents: pydoc topics, then per module its
    docstrings and (pure-Python modules) its source. ``group`` is the topic or module name,
    so everything from one module can be kept on the same side of a train/test split."""
    seen: set[str] = set()
    docs: list[tuple[str, str]] = []
    sources = list(_topic_documents()) if include_topics else []
    for module_name in MODULES if modules is None else modules:
        sources.extend((module_name, t) for t in _module_documents(module_name, include_source))
    for group, text in sources:
        if text not in seen:
            seen.add(text)
            docs.append((group, text))
    return docs


def main(argv: list[str]) -> None:
    """CLI: ``_collect.py [--no-topics] [--no-source] [module ...]``; prints JSON
    ``[[group, text], ...]`` to stdout."""
    modules = [a for a in argv if not a.startswith("--")] or None
    docs = collect(modules, "--no-topics" not in argv, "--no-source" not in argv)
    out = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8")
    json.dump(docs, out, ensure_ascii=False)
    out.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
