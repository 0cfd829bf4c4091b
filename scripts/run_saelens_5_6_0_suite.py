"""Run SAELens 5.6.0's own test suite against this package, offline, and report what fails.

The tests are extracted at run time from a git mirror of the SAELens repository (tag
v5.6.0) into a temporary folder; nothing of them is kept in this repository. A pytest
plugin of ours (scripts/saelens_5_6_0_standins.py) stands in for the hub models, tokenizers
and datasets they load (same architectures and shapes, random seeded weights, tokenizers
derived from the embedded one, small local datasets with the same columns). Tests that need
the hub anyway (pretrained SAEs, HfApi queries, wandb online) are counted apart as
"needs hub".

The same tests also run with the published sae-lens 5.6.0 (the "oracle" venv) under the
same stand-ins: a test counts as *our* failure only if it passes there. Oracle results are
cached (per oracle interpreter, tag, plugin and selection); --rerun-oracle refreshes them.

    .venv/bin/python scripts/run_saelens_5_6_0_suite.py            # ours vs the oracle
    .venv/bin/python scripts/run_saelens_5_6_0_suite.py --no-oracle
    .venv/bin/python scripts/run_saelens_5_6_0_suite.py --python /work/oracle-venv/bin/python \\
        --no-oracle                                                  # the oracle alone
    .venv/bin/python scripts/run_saelens_5_6_0_suite.py -k activations_store
    .venv/bin/python scripts/run_saelens_5_6_0_suite.py --stub-missing-names

By default a test module that imports a name this package lacks fails to collect, and each
of its tests counts as failing; --stub-missing-names stubs such names so the module's other
tests run (the missing name is then the cause only of the tests that use it).

The interpreter under test (--python, default this repository's .venv) gets this repository
on PYTHONPATH when it is that venv (or with --repo-on-path); any other interpreter uses its
installed sae_lens. The oracle venv needs pytest (and, for per-test timeouts,
pytest-timeout); sae-lens 5.6.0 there needs `wandb<0.19` and `pyarrow<20`.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
PLUGIN = Path(__file__).with_name("saelens_5_6_0_standins.py")
PLUGIN_MODULE = PLUGIN.stem
BASE_TOKENIZER = REPO_ROOT / "sae_lens" / "embedded" / "default_model" / "tokenizer.json"
DEFAULT_MIRROR = Path("/work/.mirror/jbloomAus+SAELens/repo")
DEFAULT_PYTHON = REPO_ROOT / ".venv" / "bin" / "python"
DEFAULT_ORACLE = Path("/work/oracle-venv/bin/python")
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "saelens_5_6_0_standins"
DEFAULT_REPORT = Path(tempfile.gettempdir()) / "saelens_5_6_0_suite_report.md"
NEEDS_HUB = "needs hub"  # the plugin's skip reason prefix
REPORT_VERSION = 1

PASSED, FAILED, ERROR, SKIPPED, HUB, XFAIL, XPASS = (
    "passed",
    "failed",
    "error",
    "skipped",
    "needs-hub",
    "xfailed",
    "xpassed",
)


class UsageError(Exception):
    """Bad command-line input: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage block)."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        raise UsageError(f"{message} (see --help)")


@dataclasses.dataclass
class Outcome:
    """One test's result: outcome, a one-line cause and where it was raised."""

    outcome: str
    cause: str = ""
    where: str = ""
    detail: str = ""


@dataclasses.dataclass
class Run:
    """The results of one interpreter on the extracted suite."""

    python: str
    sae_lens: str
    outcomes: dict[str, Outcome]
    seconds: float
    pytest_tail: str
    versions: dict[str, str] = dataclasses.field(default_factory=dict)

    def counts(self) -> Counter[str]:
        """How many tests had each outcome."""
        return Counter(o.outcome for o in self.outcomes.values())

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (the oracle cache and --json)."""
        data = dataclasses.asdict(self)
        data["version"] = REPORT_VERSION
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Run:
        """The inverse of `to_json`."""
        outcomes = {k: Outcome(**v) for k, v in data["outcomes"].items()}
        return cls(
            data["python"],
            data["sae_lens"],
            outcomes,
            data["seconds"],
            data["pytest_tail"],
            data.get("versions", {}),
        )


# --- command line --------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The options (see --help)."""
    parser = _Parser(
        description="Run SAELens 5.6.0's own test suite against this package, offline, "
        "with stand-ins for hub models and datasets, and report the failures by cause.",
        epilog="A test counts as our failure only if it passes with the oracle (sae-lens "
        "5.6.0) under the same stand-ins.",
    )
    parser.add_argument(
        "--saelens-repo",
        type=Path,
        default=DEFAULT_MIRROR,
        help=f"git directory of a SAELens mirror holding the tag (default {DEFAULT_MIRROR})",
    )
    parser.add_argument("--tag", default="v5.6.0", help="tag whose tests/ run (default v5.6.0)")
    parser.add_argument(
        "--python",
        type=Path,
        default=DEFAULT_PYTHON,
        help="interpreter under test (default this repository's .venv/bin/python)",
    )
    path_group = parser.add_mutually_exclusive_group()
    path_group.add_argument(
        "--repo-on-path",
        dest="repo_on_path",
        action="store_true",
        default=None,
        help="put this repository on PYTHONPATH (default: only for its own .venv)",
    )
    path_group.add_argument(
        "--no-repo-on-path",
        dest="repo_on_path",
        action="store_false",
        help="use the sae_lens installed in --python",
    )
    oracle = parser.add_mutually_exclusive_group()
    oracle.add_argument(
        "--oracle-python",
        type=Path,
        default=DEFAULT_ORACLE,
        help=f"interpreter with sae-lens 5.6.0 installed (default {DEFAULT_ORACLE})",
    )
    oracle.add_argument("--no-oracle", action="store_true", help="do not compare with the oracle")
    parser.add_argument("--rerun-oracle", action="store_true", help="ignore cached oracle results")
    parser.add_argument(
        "--report",
        type=Path,
        default=DEFAULT_REPORT,
        help=f"where the full report (markdown) goes (default {DEFAULT_REPORT})",
    )
    parser.add_argument("--json", type=Path, help="also write all outcomes as JSON here")
    parser.add_argument(
        "--standin-cache",
        type=Path,
        default=DEFAULT_CACHE,
        help=f"where stand-in models and datasets are built, kept between runs "
        f"(default {DEFAULT_CACHE})",
    )
    parser.add_argument(
        "--timeout",
        type=int,
        default=300,
        help="per-test timeout in seconds, when pytest-timeout is installed (default 300)",
    )
    parser.add_argument(
        "--run-timeout",
        type=int,
        default=3600,
        help="limit for one whole pytest run in seconds (default 3600)",
    )
    parser.add_argument("-k", dest="keyword", help="only tests matching this pytest -k expression")
    parser.add_argument(
        "--tests",
        nargs="+",
        default=["tests"],
        metavar="PATH",
        help="test paths inside the extracted suite (default: tests)",
    )
    parser.add_argument(
        "--stub-missing-names",
        action="store_true",
        help="when a test module imports a name this package lacks, stub the name (using it "
        "raises AttributeError) so that the module's other tests run; by default the whole "
        "module fails to collect and each of its tests counts as failing",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    _validate(args)
    return args


def _validate(args: argparse.Namespace) -> None:
    """Refuse bad input before doing anything slow."""
    if not args.saelens_repo.exists():
        raise UsageError(f"--saelens-repo {args.saelens_repo} does not exist")
    probe = subprocess.run(
        [
            "git",
            f"--git-dir={args.saelens_repo}",
            "rev-parse",
            "--verify",
            f"{args.tag}^{{commit}}",
        ],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        raise UsageError(f"--saelens-repo {args.saelens_repo} has no tag {args.tag!r}")
    args.tag_commit = probe.stdout.strip()
    for name in ("python",) if args.no_oracle else ("python", "oracle_python"):
        path = getattr(args, name)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise UsageError(f"--{name.replace('_', '-')} {path} is not an executable file")
    if args.timeout <= 0 or args.run_timeout <= 0:
        raise UsageError("--timeout and --run-timeout must be positive")
    for test in args.tests:
        if Path(test).is_absolute() or ".." in Path(test).parts or not test.startswith("tests"):
            raise UsageError(f"--tests {test!r}: give paths inside the suite, starting with tests")
    if not BASE_TOKENIZER.is_file():
        raise UsageError(f"the embedded tokenizer {BASE_TOKENIZER} is missing")
    if args.repo_on_path is None:
        args.repo_on_path = _same_file(args.python, DEFAULT_PYTHON)


def _same_file(a: Path, b: Path) -> bool:
    """Same interpreter path (venv pythons are symlinks to one binary: not resolved)."""
    return os.path.abspath(a) == os.path.abspath(b)


# --- running -------------------------------------------------------------------------------


def extract_suite(mirror: Path, tag: str, dest: Path) -> None:
    """`git archive <tag> tests | tar -x -C dest`, plus our plugin and a pytest.ini."""
    archive = subprocess.run(
        ["git", f"--git-dir={mirror}", "archive", tag, "tests"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    shutil.copy(PLUGIN, dest / PLUGIN.name)
    shutil.copy(BASE_TOKENIZER, dest / "base_tokenizer.json")
    (dest / "pytest.ini").write_text("[pytest]\n")


def run_env(work: Path, cache: Path, repo_on_path: bool, stub: bool = False) -> dict[str, str]:
    """The environment of a pytest run: the suite and plugin first on the path (then this
    repository, if asked), the stand-in cache, scratch caches, no telemetry."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "HF_", "WANDB"))}
    path = [str(work)] + ([str(REPO_ROOT)] if repo_on_path else [])
    env.update(
        PYTHONPATH=os.pathsep.join(path),
        SAELENS_STANDIN_CACHE=str(cache),
        SAELENS_STANDIN_TOKENIZER=str(work / "base_tokenizer.json"),
        HF_HOME=str(work / "hf_home"),
        HF_DATASETS_CACHE=str(work / "hf_datasets"),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_DATASETS_DISABLE_PROGRESS_BARS="1",
        TRANSFORMERS_VERBOSITY="error",
        TOKENIZERS_PARALLELISM="false",
        WANDB_DIR=str(work / "wandb"),
        WANDB_SILENT="true",
        MPLBACKEND="Agg",
    )
    if stub:
        env["SAELENS_STANDIN_STUB_MISSING"] = "1"
    return env


def describe_sae_lens(python: Path, env: dict[str, str], work: Path) -> str:
    """Which sae_lens the interpreter imports, e.g. '5.6.0 at /work/main/sae_lens'."""
    code = (
        "import os, sae_lens; print(sae_lens.__version__, 'at', os.path.dirname(sae_lens.__file__))"
    )
    proc = subprocess.run(
        [str(python), "-c", code], env=env, cwd=work, capture_output=True, text=True, timeout=300
    )
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        raise UsageError(f"{python} cannot import sae_lens: {tail}")
    return proc.stdout.strip()


VERSIONS_OF = (
    "torch",
    "transformers",
    "transformer-lens",
    "datasets",
    "huggingface-hub",
    "tokenizers",
    "pytest",
)


def dependency_versions(python: Path, env: dict[str, str]) -> dict[str, str]:
    """Installed versions of the packages the tests lean on."""
    code = (
        "import json, importlib.metadata as m\n"
        "def v(n):\n    try: return m.version(n)\n    except Exception: return 'absent'\n"
        f"print(json.dumps({{n: v(n) for n in {list(VERSIONS_OF)!r}}}))"
    )
    proc = subprocess.run([str(python), "-c", code], env=env, capture_output=True, text=True)
    return json.loads(proc.stdout) if proc.returncode == 0 else {}


def has_module(python: Path, module: str, env: dict[str, str]) -> bool:
    """Whether `python` can import `module`."""
    proc = subprocess.run([str(python), "-c", f"import {module}"], env=env, capture_output=True)
    return proc.returncode == 0


def run_suite(
    python: Path, args: argparse.Namespace, work: Path, repo_on_path: bool, stub: bool = False
) -> Run:
    """Run the extracted suite with `python`; parse its junit XML."""
    env = run_env(work, args.standin_cache, repo_on_path, stub)
    sae_lens = describe_sae_lens(python, env, work)
    if not has_module(python, "pytest", env):
        raise UsageError(f"{python} has no pytest: install it there (pip install pytest)")
    tag = hashlib.sha256(str(python).encode()).hexdigest()[:8]
    junit = work / f"junit-{tag}.xml"
    log = work / f"pytest-{tag}.log"
    cmd = [
        str(python),
        "-m",
        "pytest",
        *args.tests,
        "-p",
        PLUGIN_MODULE,
        "-p",
        "no:cacheprovider",
        "-c",
        str(work / "pytest.ini"),
        "--rootdir",
        str(work),
        "-q",
        "--tb=short",
        "--continue-on-collection-errors",
        "--durations=10",
        "-o",
        "junit_family=xunit1",
        f"--junitxml={junit}",
    ]
    if has_module(python, "pytest_timeout", env):
        cmd.append(f"--timeout={args.timeout}")
    if args.keyword:
        cmd += ["-k", args.keyword]
    print(f"running the 5.6.0 suite with {python} (sae_lens {sae_lens}) ...", flush=True)
    start = time.monotonic()
    with open(log, "w") as out:
        try:
            subprocess.run(
                cmd,
                env=env,
                cwd=work,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=args.run_timeout,
            )
        except subprocess.TimeoutExpired:
            out.write(f"\n[run stopped after {args.run_timeout} s]\n")
    seconds = time.monotonic() - start
    tail = "\n".join(log.read_text(errors="replace").strip().splitlines()[-3:])
    if not junit.exists():
        raise RuntimeError(f"pytest wrote no junit XML; the end of its log ({log}):\n{tail}")
    outcomes = parse_junit(junit, work)
    print(f"  {len(outcomes)} tests in {seconds:.0f} s: {tail.splitlines()[-1] if tail else ''}")
    versions = dependency_versions(python, env)
    return Run(str(python), sae_lens, outcomes, round(seconds, 1), tail, versions)


# --- parsing -------------------------------------------------------------------------------

_FRAME = re.compile(r"^(?P<path>\S+\.py):(?P<line>\d+): in (?P<func>\S+)", re.MULTILINE)
_E_LINE = re.compile(r"^E\s+(?P<msg>.*)$", re.MULTILINE)


def normalise(message: str, work: Path) -> str:
    """One line, without addresses, temporary paths or long float digits."""
    message = message.replace(str(work), "<suite>")
    lines = [ln.strip() for ln in message.strip().splitlines() if ln.strip()]
    line = lines[0] if lines else ""
    if line.startswith("failed on ") and " with " in line:  # junit's wrapper for errors
        phase = line.split(" with ", 1)[0].removeprefix("failed on ")
        line = line.split(" with ", 1)[1].strip().strip('"') + f" (in {phase})"
    line = re.sub(r"0x[0-9a-fA-F]{6,}", "0x…", line)
    line = re.sub(r"/tmp/pytest-of-[^/\s]+/pytest-\d+/[^/\s'\"]+", "<tmp_path>", line)
    line = re.sub(r"(?<![\w.])(-?\d+\.\d{3})\d+(e[-+]?\d+)?", r"\1…", line)
    return line[:240] + ("…" if len(line) > 240 else "")


def where_raised(text: str) -> str:
    """The deepest sae_lens frame of a short traceback, else its deepest frame."""
    frames = [
        (m["path"], m["line"], m["func"])
        for m in _FRAME.finditer(text)
        if not m["path"].startswith("<") and PLUGIN.name not in m["path"]
    ]
    if not frames:
        return ""
    ours = [f for f in frames if "sae_lens/" in f[0] and "/tests/" not in f[0]]
    path, line, func = (ours or frames)[-1]
    if ours:
        return f"{path[path.index('sae_lens/') :]}:{line} in {func}"
    where = "in the test" if path.startswith("tests/") else "in a dependency, no sae_lens frame"
    short = path.split("site-packages/")[-1]
    return f"{short}:{line} in {func} ({where})"


def _node_id(case: ET.Element) -> str:
    file = case.get("file")
    classname = case.get("classname") or ""
    name = case.get("name") or ""
    if not classname:  # a module that failed to collect
        return file or name.replace(".", "/") + ".py"
    if not file:
        return f"{classname}::{name}"
    module = file.removesuffix(".py").replace("/", ".")
    cls = classname[len(module) + 1 :] if classname.startswith(module + ".") else ""
    return f"{file}::{cls}::{name}" if cls else f"{file}::{name}"


def parse_junit(path: Path, work: Path) -> dict[str, Outcome]:
    """Outcome of every test case in a pytest junit XML (xunit1)."""
    outcomes: dict[str, Outcome] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        node = _node_id(case)
        failure, error = case.find("failure"), case.find("error")
        skipped = case.find("skipped")
        if failure is not None or error is not None:
            elem = failure if failure is not None else error
            assert elem is not None
            text = elem.text or ""
            message = elem.get("message") or ""
            if elem is error and message == "collection failure":
                errs = _E_LINE.findall(text)
                message = "collection failure: " + (errs[-1] if errs else "?")
            kind = FAILED if failure is not None else ERROR
            if failure is not None and (message.startswith("[XPASS(strict)]")):
                kind = XPASS
            outcomes[node] = Outcome(
                kind, normalise(message, work), where_raised(text), text[-4000:]
            )
        elif skipped is not None:
            message = skipped.get("message") or ""
            if skipped.get("type") == "pytest.xfail":
                outcomes[node] = Outcome(XFAIL, normalise(message, work))
            elif NEEDS_HUB in message:
                reason = message[message.index(NEEDS_HUB) :]
                outcomes[node] = Outcome(HUB, normalise(reason, work))
            else:
                outcomes[node] = Outcome(SKIPPED, normalise(message, work))
        else:
            outcomes[node] = Outcome(PASSED)
    return outcomes


# --- the oracle cache ----------------------------------------------------------------------


def oracle_cache_path(args: argparse.Namespace) -> Path:
    """Cached oracle results: keyed by interpreter, tag, plugin, selection and timeout."""
    key = json.dumps(
        [
            REPORT_VERSION,
            str(args.oracle_python.resolve()),
            args.tag_commit,
            hashlib.sha256(PLUGIN.read_bytes()).hexdigest(),
            hashlib.sha256(BASE_TOKENIZER.read_bytes()).hexdigest(),
            args.tests,
            args.keyword,
            args.timeout,
        ]
    )
    return args.standin_cache / f"oracle-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def oracle_run(args: argparse.Namespace, work: Path) -> Run:
    """The oracle's results: from the cache, or a fresh run (then cached)."""
    cache = oracle_cache_path(args)
    if cache.exists() and not args.rerun_oracle:
        print(f"oracle results from the cache {cache} (--rerun-oracle to refresh)")
        return Run.from_json(json.loads(cache.read_text()))
    run = run_suite(args.oracle_python, args, work, repo_on_path=False)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(run.to_json()))
    tmp.replace(cache)
    return run


# --- report --------------------------------------------------------------------------------


HARNESS_NOTES = """\
- Models are stand-ins with the real architecture and shape (d_model, layers, heads, vocab
  size, context) and random seeded weights, built on first use and loaded through the real
  `from_pretrained` code: {models}. Facts of trained weights do not hold, except two that
  tests rely on: TinyStories-1M's residual-stream norm (token-embedding rows rescaled) and
  mean-free residual writes in the NeelNanda models (so TransformerLens's weight processing
  changes no activation).
- Tokenizers ({tokenizers} and those of the models) have the real vocabulary size and
  special-token ids; their regular tokens are this package's embedded byte-level BPE plus
  whole-word merges for the words the tests' strings use ("hello", " world", " France", ...).
  Other text tokenizes differently from the real tokenizers.
- Datasets ({datasets}) are small local parquet files (pydoc help-topic text, or token ids
  made with the matching stand-in tokenizer) with the real columns, splits and row lengths.
- Needs the hub (counted apart): pretrained SAEs, HfApi queries, neuronpedia, wandb online
  runs, HookedMamba (mamba_lens is not installed). Any connection off this machine fails at
  once; a test that then fails is counted as "needs hub" (as our failure only where it
  passed with the oracle, which did not need the hub for it).
- pytest 9 cannot `pytest.approx` a 0-d tensor (pytest 8, which 5.6.0 used, could): the
  plugin restores pytest 8's behaviour.
- The two interpreters have different dependency versions (below). A failure raised in the
  test itself, with no sae_lens frame, may come from them (e.g. transformers 5 honours
  TransformerLens's `add_bos_token=True`, so `tokenizer.encode` starts with BOS) rather than
  from sae_lens.
"""


def harness_notes(runs: list[Run]) -> list[str]:
    """What the stand-ins are, their limits, and each interpreter's dependency versions."""
    names: dict[str, str] = {"models": "?", "tokenizers": "?", "datasets": "?"}
    try:
        sys.path.insert(0, str(PLUGIN.parent))
        import saelens_5_6_0_standins as standins

        names = {
            "models": ", ".join(standins.MODELS),
            "tokenizers": ", ".join(standins.TOKENIZER_REPOS),
            "datasets": ", ".join(standins.DATASETS),
        }
    except Exception:
        pass
    lines = ["## Harness notes and limitations", "", HARNESS_NOTES.format(**names)]
    for run in runs:
        versions = ", ".join(f"{k} {v}" for k, v in run.versions.items())
        lines.append(f"- `{run.python}`: {versions}")
    return lines + [""]


def summary_lines(label: str, run: Run) -> list[str]:
    """Counts and failure fraction of one run."""
    c = run.counts()
    runnable = c[PASSED] + c[FAILED] + c[ERROR]
    bad = c[FAILED] + c[ERROR]
    frac = bad / runnable if runnable else 0.0
    other = "".join(f", {c[k]} {k}" for k in (XFAIL, XPASS) if c[k])
    return [
        f"{label}: sae_lens {run.sae_lens} ({run.python}, {run.seconds:.0f} s)",
        f"  {sum(c.values())} tests: {c[PASSED]} passed, {c[FAILED]} failed, {c[ERROR]} error, "
        f"{c[HUB]} skipped as needing the hub, {c[SKIPPED]} skipped by the suite itself{other}",
        f"  runnable {runnable}, failing {bad}: failure fraction {frac:.3f}"
        + (f" (1 in {runnable / bad:.1f})" if bad else ""),
    ]


def group_by_cause(
    nodes: list[str], outcomes: dict[str, Outcome], hub_note: bool = False
) -> list[tuple[str, list[str], str]]:
    """(cause, test ids, where) groups, most frequent first; `hub_note` marks tests that
    needed the hub (in a list of tests that did not need it with the oracle)."""
    groups: dict[str, list[str]] = defaultdict(list)
    for node in nodes:
        o = outcomes.get(node)
        cause = "" if o is None else o.cause
        if o is None:
            module = outcomes.get(node.split("::", 1)[0])
            cause = (
                f"not collected here: {module.cause}"
                if module is not None and module.cause.startswith("collection failure")
                else "not run here (missing from this run's results)"
            )
        if hub_note and o is not None and o.outcome == HUB:
            cause = f"needs the hub here (the oracle did not): {o.cause}"
        groups[cause or "(no message)"].append(node)

    def where(ids: list[str]) -> str:
        places = Counter(outcomes[n].where for n in ids if n in outcomes and outcomes[n].where)
        return places.most_common(1)[0][0] if places else ""

    return sorted(
        ((cause, sorted(ids), where(ids)) for cause, ids in groups.items()),
        key=lambda g: (-len(g[1]), g[0]),
    )


def expand_collection_failures(run: Run, reference: Run) -> int:
    """Replace each module of `run` that failed to collect by the tests `reference`
    collected in it (errors, cause "not collected here: ..."); return how many."""
    added = 0
    for module, o in list(run.outcomes.items()):
        if "::" in module or not o.cause.startswith("collection failure"):
            continue
        tests = [n for n in reference.outcomes if n.startswith(module + "::")]
        if not tests:
            continue
        del run.outcomes[module]
        for node in tests:
            if node not in run.outcomes:
                run.outcomes[node] = Outcome(ERROR, f"not collected here: {o.cause}", o.where)
                added += 1
    return added


def compare(ours: Run, oracle: Run) -> dict[str, list[str]]:
    """Tests by their pair of outcomes (ours, the oracle's)."""
    passing_oracle = [n for n, o in oracle.outcomes.items() if o.outcome == PASSED]
    ours_bad = [
        n for n in passing_oracle if n not in ours.outcomes or ours.outcomes[n].outcome != PASSED
    ]
    ours_bad = [
        n for n in ours_bad if n not in ours.outcomes or ours.outcomes[n].outcome != SKIPPED
    ]
    artefacts = [n for n, o in oracle.outcomes.items() if o.outcome in (FAILED, ERROR)]
    only_ours_pass = [n for n in artefacts if ours.outcomes.get(n, Outcome("")).outcome == PASSED]
    new_tests = [n for n in ours.outcomes if n not in oracle.outcomes]
    return {
        "passing_oracle": passing_oracle,
        "our_failures": ours_bad,
        "artefacts": artefacts,
        "only_ours_pass": only_ours_pass,
        "not_in_oracle": new_tests,
    }


def build_report(args: argparse.Namespace, ours: Run, oracle: Run | None) -> tuple[str, str]:
    """(summary printed to the terminal, full markdown report)."""
    summary = [f"SAELens {args.tag} test suite ({args.tag_commit[:10]}) with offline stand-ins"]
    summary += summary_lines("under test", ours)
    md = [f"# SAELens {args.tag} test suite against this package", ""]
    md += [
        f"Tests: `tests/` of {args.tag} ({args.tag_commit}) from {args.saelens_repo}; "
        f"selection {' '.join(args.tests)}"
        + (f", -k {args.keyword!r}" if args.keyword else "")
        + (
            "; names missing here that test modules import were stubbed (--stub-missing-names)"
            if args.stub_missing_names
            else ""
        ),
        "",
        "## Summary",
        "",
        "```",
        *summary_lines("under test", ours),
    ]
    if oracle is not None:
        md += summary_lines("oracle", oracle)
        cmp = compare(ours, oracle)
        n_ok = len(cmp["passing_oracle"])
        n_bad = len(cmp["our_failures"])
        frac = n_bad / n_ok if n_ok else 0.0
        line = (
            f"our failures (pass with the oracle, not here): {n_bad} of {n_ok}: "
            f"fraction {frac:.3f}" + (f" (1 in {n_ok / n_bad:.1f})" if n_bad else "")
        )
        summary += summary_lines("oracle", oracle) + [line]
        md += [line]
        groups = group_by_cause(cmp["our_failures"], ours.outcomes, hub_note=True)
        summary.append(f"our failures in {len(groups)} cause groups (full list in {args.report}):")
        for cause, ids, _ in groups[:15]:
            summary.append(f"  {len(ids):3d}  {cause}")
        if len(groups) > 15:
            summary.append(f"  ... {len(groups) - 15} more groups")
        md += ["```", "", "## Our failures by cause (tests that pass with the oracle)", ""]
        md += _group_md(groups)
        md += ["## Harness artefacts: tests that fail with the oracle too", ""]
        md += [
            "These fail with sae-lens 5.6.0 under the same stand-ins (a stand-in mismatch, or",
            "5.6.0 with these dependency versions); they are not counted as our failures.",
            "",
        ]
        md += _group_md(group_by_cause(cmp["artefacts"], oracle.outcomes), ours.outcomes)
        hub_ours = sorted(n for n, o in ours.outcomes.items() if o.outcome == HUB)
        hub_oracle = sorted(n for n, o in oracle.outcomes.items() if o.outcome == HUB)
        md += [
            f"## Skipped as needing the hub: {len(hub_ours)} here, {len(hub_oracle)} with the "
            "oracle",
            "",
        ]
        md += _group_md(group_by_cause(hub_oracle, oracle.outcomes))
        extra = sorted(set(hub_ours) - set(hub_oracle))
        if extra:
            md += ["Needing the hub here only:", ""] + [f"- `{n}`" for n in extra] + [""]
        if cmp["not_in_oracle"]:
            md += ["## Collected here but not with the oracle", ""]
            md += [f"- `{n}`: {ours.outcomes[n].outcome}" for n in cmp["not_in_oracle"]] + [""]
    else:
        md += ["```", ""]
        bad = [n for n, o in ours.outcomes.items() if o.outcome in (FAILED, ERROR)]
        groups = group_by_cause(bad, ours.outcomes)
        summary.append(f"failures in {len(groups)} cause groups (no oracle comparison):")
        for cause, ids, _ in groups[:15]:
            summary.append(f"  {len(ids):3d}  {cause}")
        md += ["## Failures by cause (not compared with the oracle)", ""] + _group_md(groups)
        hub = sorted(n for n, o in ours.outcomes.items() if o.outcome == HUB)
        md += [f"## Skipped as needing the hub: {len(hub)}", ""]
        md += _group_md(group_by_cause(hub, ours.outcomes))
    md += harness_notes([ours] + ([oracle] if oracle is not None else []))
    own_skips = sorted(n for n, o in ours.outcomes.items() if o.outcome == SKIPPED)
    md += [f"## Skipped by the suite itself: {len(own_skips)}", ""]
    md += [f"- `{n}`: {ours.outcomes[n].cause}" for n in own_skips] + [""]
    md += ["## Last lines of pytest's output", "", "```", ours.pytest_tail]
    if oracle is not None:
        md += ["--- oracle ---", oracle.pytest_tail]
    md += ["```", ""]
    summary.append(f"full report: {args.report}")
    return "\n".join(summary), "\n".join(md)


def _group_md(
    groups: list[tuple[str, list[str], str]], others: dict[str, Outcome] | None = None
) -> list[str]:
    lines: list[str] = []
    for cause, ids, where in groups:
        lines.append(f"### {len(ids)} × {cause}")
        if where:
            lines.append(f"at `{where}`")
        lines.append("")
        for node in ids:
            note = ""
            if others is not None:
                note = f" (here: {others[node].outcome if node in others else 'not run'})"
            lines.append(f"- `{node}`{note}")
        lines.append("")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run the suite (and the oracle), print the summary, write the report."""
    try:
        args = parse_args(argv)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    args.standin_cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="saelens_5_6_0_suite-"))
    try:
        extract_suite(args.saelens_repo, args.tag, work)
        ours = run_suite(args.python, args, work, args.repo_on_path, args.stub_missing_names)
        oracle = None if args.no_oracle else oracle_run(args, work)
        if oracle is not None:
            expand_collection_failures(ours, oracle)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (RuntimeError, subprocess.CalledProcessError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"kept the suite, logs and junit XML in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    summary, report = build_report(args, ours, oracle)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(report)
    if args.json:
        data = {"ours": ours.to_json(), "oracle": oracle.to_json() if oracle else None}
        args.json.write_text(json.dumps(data, indent=1))
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
