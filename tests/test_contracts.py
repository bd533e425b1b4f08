"""Contract tests over everything registered and every suite in the repository.

Adding a suite, a method, a task, a judge or a backend adds cases here: each suite loads and
hashes stably, each registered entry has a strict pydantic config whose defaults construct and
each method declares its family, the light modules never import torch, the methods/judges
import boundary holds, no method imports another (shared machinery lives in bench/), and only
`bench.method_api` knows where in a policy directory a method's verifier lives.
"""

from __future__ import annotations

import ast
import copy
import json
import subprocess
import sys
import textwrap
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from bench import registry
from bench.config import StrictParams, is_suite_file, load_suite, validate_suite
from bench.errors import ConfigError
from bench.evaluate.verdicts import Verdict
from bench.method_api import VERIFIER_DIR
from bench.registry import METHOD_FAMILIES, Entry, Registry, UnknownNameError, register_method
from bench.run.hashing import content_hash
from bench.tasks.base import TASK_CAPABILITIES, Sample, Task
from bench.tasks.keywords import KeywordsParams, KeywordsTask, format_prompt, word
from judges.gold import GoldJudge, gold_verdict

REPO = Path(__file__).resolve().parents[1]
SUITE_FILES = sorted(p for p in (REPO / "suites").rglob("*") if is_suite_file(p))


# --- suites -------------------------------------------------------------------------------------


def test_the_repository_has_suites() -> None:
    assert REPO / "suites" / "micro" / "keywords.yaml" in SUITE_FILES
    paper = {p.name for p in SUITE_FILES if p.parent == REPO / "suites" / "paper"}
    assert paper == {
        "tldr_pythia1.4b.yaml",
        "tldr_pythia2.8b.yaml",
        "tldr_two_word.yaml",
        "tldr_rouge.yaml",
    }
    assert not any(p.name.startswith("_") for p in SUITE_FILES)  # bases are not suites


@pytest.mark.parametrize("path", SUITE_FILES, ids=[str(p.relative_to(REPO)) for p in SUITE_FILES])
def test_suite_loads_and_its_cells_hash_stably(path: Path) -> None:
    suite = load_suite(path)
    cells = suite.cells()
    assert len(cells) == len(suite.methods) * len(suite.budgets) * len(suite.seeds) > 0
    hashes = []
    for cell in cells:
        config = cell.resolved_config()
        text = json.dumps(config, allow_nan=False)  # plain JSON: no tuples, paths, NaN, objects
        assert json.loads(text) == config
        assert content_hash(config) == content_hash(cell.resolved_config())
        hashes.append(content_hash(config))
    # Loading the file again gives the same keys (nothing process- or order-dependent in them) ...
    assert [content_hash(c.resolved_config()) for c in load_suite(path).cells()] == hashes
    # ... and no two cells share one.
    assert len(set(hashes)) == len(hashes)


# --- registered entries -------------------------------------------------------------------------

REGISTRIES: dict[str, Registry[Entry]] = {
    "method": registry.METHODS,
    "task": registry.TASKS,
    "judge": registry.JUDGES,
    "backend": registry.BACKENDS,
}


def _registered_by_a_test(entry: Entry) -> bool:
    """Test modules (tests/test_config.py) register throwaway `test_*` entries in the same
    process; the contract is about what the package and its plugins register."""
    top = entry.fn.__module__.split(".")[0]
    return top.startswith("test_") or top in ("tests", "conftest")


ENTRIES = [
    (kind, entry)
    for kind, reg in REGISTRIES.items()
    for entry in (reg.get(name) for name in reg.names())
    if not _registered_by_a_test(entry)
]
ENTRY_IDS = [f"{kind}:{entry.name}" for kind, entry in ENTRIES]


def test_the_builtin_entries_are_registered() -> None:
    assert {"method:dpo", "method:sft", "task:keywords", "judge:gold", "backend:hf"} <= set(
        ENTRY_IDS
    )


@pytest.mark.parametrize(("kind", "entry"), ENTRIES, ids=ENTRY_IDS)
def test_entry_has_a_strict_config_whose_defaults_construct(kind: str, entry: Entry) -> None:
    assert isinstance(entry.config, type) and issubclass(entry.config, BaseModel), (
        f"{kind} {entry.name!r}: its config {entry.config!r} is not a pydantic model"
    )
    assert entry.config.model_config.get("extra") == "forbid"
    defaults = entry.config()
    with pytest.raises(ValidationError, match="surely_not_a_key"):
        entry.config(surely_not_a_key=1)
    # The defaults survive the trip through the JSON a result line stores.
    assert entry.config.model_validate(json.loads(defaults.model_dump_json())) == defaults


def config_models(model: type[BaseModel]) -> list[type[BaseModel]]:
    """`model` and every pydantic model nested in its fields (through unions, lists, dicts)."""
    found = [model]
    for field in model.model_fields.values():
        todo = [field.annotation]
        while todo:
            annotation = todo.pop()
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                found += [m for m in config_models(annotation) if m not in found]
            todo += typing.get_args(annotation)
    return found


@pytest.mark.parametrize(("kind", "entry"), ENTRIES, ids=ENTRY_IDS)
def test_entry_config_is_strict_frozen_and_documented(kind: str, entry: Entry) -> None:
    for model in config_models(entry.config):
        name = f"{kind} {entry.name!r}: {model.__qualname__}"
        assert issubclass(model, StrictParams), f"{name} does not derive from StrictParams"
        assert model.model_config.get("strict") is True, f"{name} is not strict"
        assert model.model_config.get("frozen") is True, f"{name} is not frozen"
        assert model.model_config.get("extra") == "forbid", f"{name} takes unknown keys"
        undocumented = [f for f, info in model.model_fields.items() if not info.description]
        assert undocumented == [], f"{name}: no docstring under {', '.join(undocumented)}"


CONTRACT_SUITE: dict[str, Any] = {
    "name": "contract",
    "version": 1,
    "tier": "micro",
    "task": {"name": "keywords", "params": {}},
    "base_model": {
        "kind": "micro",
        "n_embd": 8,
        "n_layer": 1,
        "n_head": 2,
        "initializer_range": 0.1,
        "pretrain_steps": 1,
        "sft_epochs": 1,
        "lr": 0.1,
        "batch_size": 2,
        "seed": 0,
    },
    "budgets": [100],
    "methods": ["sft"],
    "generation": {"backend": "hf", "n_eval_prompts": 10, "max_new_tokens": 7},
    "judge": {"kind": "gold"},
    "seeds": [0],
}
"""A suite every built-in accepts; each case below puts one registered entry into it."""


def _with_entry(kind: str, name: str, params: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """CONTRACT_SUITE with `name` in the block of its kind; the key path of its params."""
    data = copy.deepcopy(CONTRACT_SUITE)
    if kind == "task":  # with what any task provides: a base model of its own, no gold
        data["task"] = {"name": name, "params": params}
        data["base_model"] = {"kind": "pretrained", "path": "EleutherAI/pythia-1b-deduped"}
        data["judge"] = {"kind": "rouge"}
        return data, "task.params"
    if kind == "method":
        data["methods"] = [{"method": name, **params}]
        return data, "methods[0]"
    if kind == "backend":
        data["generation"].update(backend=name, backend_params=params)
        return data, "generation.backend_params"
    data["judge"] = {"kind": name, "params": params}
    return data, "judge.params"


def _first_number_field(config: type[BaseModel]) -> tuple[str, str] | None:
    """The first field typed `int` or `float`, with what its error says it expected."""
    for field, info in config.model_fields.items():
        if info.annotation in (int, float):
            return field, "an integer" if info.annotation is int else "a number"
    return None


NUMBER_CASES = [(k, e) for k, e in ENTRIES if _first_number_field(e.config)]


def test_every_kind_of_block_has_a_string_for_number_case() -> None:
    assert {kind for kind, _ in NUMBER_CASES} == set(REGISTRIES)


@pytest.mark.parametrize(
    ("kind", "entry"), NUMBER_CASES, ids=[f"{k}:{e.name}" for k, e in NUMBER_CASES]
)
def test_a_string_for_a_number_is_one_line_in_every_kind_of_block(kind: str, entry: Entry) -> None:
    field, expected = _first_number_field(entry.config)
    data, params_path = _with_entry(kind, entry.name, {field: "1"})
    validate_suite(_with_entry(kind, entry.name, {})[0], "contract.yaml")  # valid without it
    with pytest.raises(ConfigError) as caught:
        validate_suite(data, source="contract.yaml")
    assert str(caught.value) == (
        f"contract.yaml: {params_path}.{field}: got '1' (str); expected {expected}"
    )


TASK_CAPABILITY_METHODS = {
    "has_gold": "gold_reward",
    "has_features": "features",
    "builds_tokenizer": "write_tokenizer",
}
"""Each capability flag of `Task` and the method that provides it."""


@pytest.mark.parametrize("entry", [e for k, e in ENTRIES if k == "task"], ids=lambda e: e.name)
def test_a_task_declares_exactly_the_capabilities_it_implements(entry: Entry) -> None:
    assert set(TASK_CAPABILITY_METHODS) == set(TASK_CAPABILITIES)
    task_class = type(entry.fn(entry.config()))
    for flag, method in TASK_CAPABILITY_METHODS.items():
        implemented = getattr(task_class, method) is not getattr(Task, method)
        assert getattr(task_class, flag) == implemented, (
            f"task {entry.name!r}: {flag} is {getattr(task_class, flag)}, but {method} is "
            f"{'' if implemented else 'not '}implemented"
        )


@pytest.mark.parametrize(("kind", "entry"), ENTRIES, ids=ENTRY_IDS)
def test_what_a_config_asks_of_a_task_is_a_declared_capability(kind: str, entry: Entry) -> None:
    for _, capability in entry.config().task_needs():
        assert capability in TASK_CAPABILITIES


def test_a_suite_asking_a_task_for_features_it_lacks_fails_at_validate() -> None:
    # The case: a feature-reading verifier on a TL;DR suite failed at training time.
    data = copy.deepcopy(CONTRACT_SUITE)
    data["task"] = {"name": "tldr", "params": {}}
    data["base_model"] = {"kind": "pretrained", "path": "EleutherAI/pythia-1b-deduped"}
    data["judge"] = {"kind": "rouge"}
    data["methods"] = [{"method": "online_dpo", "reward_model": {"capacity": "head"}}]
    validate_suite(copy.deepcopy(data), "contract.yaml")
    data["methods"] = [{"method": "online_dpo", "reward_model": {"kind": "oracle_features"}}]
    with pytest.raises(ConfigError) as caught:
        validate_suite(data, "contract.yaml")
    assert str(caught.value) == (
        "contract.yaml: methods[0].reward_model.kind: got 'oracle_features' (str); needs features "
        "of an output (Task.features), which task 'tldr' lacks"
    )


def test_the_old_linear_capacity_names_the_oracle_it_was() -> None:
    data = copy.deepcopy(CONTRACT_SUITE)
    data["methods"] = [{"method": "online_dpo", "reward_model": {"capacity": "linear"}}]
    with pytest.raises(ConfigError) as caught:
        validate_suite(data, "contract.yaml")
    message = str(caught.value)
    assert message.startswith("contract.yaml: methods[0].reward_model.capacity: got 'linear'")
    assert "it is the oracle now, written `reward_model: {kind: oracle_features}`" in message
    assert "\n" not in message


@pytest.mark.parametrize("entry", [e for k, e in ENTRIES if k == "task"], ids=lambda e: e.name)
def test_task_factory_builds_from_defaults(entry: Entry) -> None:
    task = entry.fn(entry.config())
    assert task.name == entry.name
    assert task.pool_size() >= 1


@pytest.mark.parametrize("entry", [e for k, e in ENTRIES if k == "backend"], ids=lambda e: e.name)
def test_backend_factory_builds_from_defaults(entry: Entry) -> None:
    backend = entry.fn(entry.config())
    assert callable(backend.generate) and callable(backend.close)


@pytest.mark.parametrize("entry", [e for k, e in ENTRIES if k == "method"], ids=lambda e: e.name)
def test_every_registered_method_has_a_family(entry: Entry) -> None:
    assert entry.family in METHOD_FAMILIES, f"method {entry.name!r}: family {entry.family!r}"


def test_the_built_in_methods_declare_their_gradient() -> None:
    """Tajwar et al.'s 2x2 places a method by what it declared (bench.report.views)."""
    from bench.registry import METHODS

    declared = {name: METHODS.get(name).negative_gradient for name in METHODS.names()}
    expected = {"sft": False, "dpo": True, "filter": False, "online_dpo": True, "best_of_n": None}
    assert {name: declared[name] for name in expected} == expected


def _register_method_calls(source: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", getattr(node.func, "attr", None)) == "register_method"
    ]


def test_every_builtin_method_declares_its_family_where_it_registers() -> None:
    """The default (`offline`) is for plugins written before families existed; a method of this
    repository says what it is."""
    calls = {
        path.name: _register_method_calls(path.read_text(encoding="utf-8"))
        for path in sorted((REPO / "methods").glob("*.py"))
    }
    assert sum(len(c) for c in calls.values()) >= 5  # the scan sees the registrations
    undeclared = [
        name
        for name, found in calls.items()
        for call in found
        if "family" not in {keyword.arg for keyword in call.keywords}
    ]
    assert undeclared == []


def test_an_unknown_family_is_refused_at_registration() -> None:
    with pytest.raises(ValueError, match="unknown family 'onlin'; known: offline, online"):
        register_method("test_typo", config=BaseModel, family="onlin")  # type: ignore[arg-type]


def test_unknown_name_lists_the_known_ones() -> None:
    widgets: Registry[int] = Registry("widget")
    widgets.add("b", 2)
    widgets.add("a", 1)
    with pytest.raises(UnknownNameError) as caught:
        widgets.get("c")
    assert str(caught.value) == "unknown widget 'c'; known widgets: a, b"
    assert isinstance(caught.value, KeyError)


def test_unknown_method_lists_every_registered_method() -> None:
    with pytest.raises(
        UnknownNameError, match="unknown method 'no_such_method'; known methods: "
    ) as caught:
        registry.METHODS.get("no_such_method")
    for name in registry.METHODS.names():
        assert name in str(caught.value)


def test_registering_a_name_twice_is_refused() -> None:
    widgets: Registry[int] = Registry("widget")
    widgets.add("a", 1)
    widgets.add("a", 1)  # the same entry again (a module imported twice) is fine
    with pytest.raises(ValueError, match="widget 'a' is registered twice"):
        widgets.add("a", 2)


# --- no torch on the light path -----------------------------------------------------------------

_LIGHT_PATH_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import bench.config
    import bench.registry

    bench.registry.discover()
    n_cells = 0
    for path in sorted(Path("suites").rglob("*")):
        if bench.config.is_suite_file(path):
            for cell in bench.config.load_suite(path).cells():
                cell.resolved_config()
                n_cells += 1
    import bench.cli
    import bench.run.runner
    import bench.run.selection

    loaded = sorted(m for m in ("torch", "transformers") if m in sys.modules)
    print(f"cells={n_cells} loaded={loaded}")
    """
)


def test_validating_and_importing_the_runner_does_not_import_torch() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _LIGHT_PATH_SCRIPT],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    cells, loaded = result.stdout.split()
    assert int(cells.removeprefix("cells=")) >= 1  # the script did load the suites
    assert loaded == "loaded=[]", f"the light path imported {loaded}"


# --- import boundaries --------------------------------------------------------------------------


def imported_modules(source: str) -> set[str]:
    """Every module a source imports: `import x`, `from x import y` (at any depth, inside
    functions too), and importlib.import_module / __import__ calls with a literal name."""
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            modules.add("." * node.level + (node.module or ""))
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None))
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            modules.add(node.args[0].value)
    return modules


def test_imported_modules_finds_every_form() -> None:
    source = textwrap.dedent(
        """
        import judges
        import os, judges.gold as g
        from judges.gold import gold_verdict
        def f():
            from judges import gold
            importlib.import_module("judges.other")
        """
    )
    assert imported_modules(source) == {"judges", "os", "judges.gold", "judges.other"}


def _violations(package: str, forbidden: str) -> list[str]:
    files = sorted((REPO / package).rglob("*.py"))
    assert files, f"no sources under {package}/"
    found = []
    for path in files:
        for module in imported_modules(path.read_text(encoding="utf-8")):
            if module == forbidden or module.startswith(forbidden + "."):
                found.append(f"{path.relative_to(REPO)} imports {module}")
            # A relative import climbing out of the package could reach the other one.
            if module.startswith("..") and module.lstrip(".").split(".")[0] == forbidden:
                found.append(f"{path.relative_to(REPO)} imports {module}")
    return found


def test_methods_never_import_judges() -> None:
    assert _violations("methods", "judges") == []


def test_judges_never_import_methods() -> None:
    assert _violations("judges", "methods") == []


def test_no_method_imports_another_method() -> None:
    """A method file imports from bench/ (and its own stdlib, torch, pydantic), never from
    another method: what two methods share lives once in bench/ (`bench.train.preference`)."""
    files = sorted((REPO / "methods").glob("*.py"))
    assert len(files) >= 5
    found = [
        f"{path.relative_to(REPO)} imports {module}"
        for path in files
        for module in imported_modules(path.read_text(encoding="utf-8"))
        if module == "methods" or module.startswith(("methods.", "."))
    ]
    assert found == []


def test_bench_never_imports_methods() -> None:
    """The arrow runs one way: methods call bench/, bench/ finds methods through the registry."""
    assert _violations("bench", "methods") == []


def folder_mentions(source: str, folder: str) -> list[int]:
    """Lines of `source` that use `folder` as a path component: `x / "folder"`,
    `joinpath("folder")`, `Path("folder")`, `os.path.join(.., "folder")`, or a string (an
    f-string's text too) holding "folder/" or "/folder". Other uses of the word (a dict key, a
    config field, a judge's name) are not paths and pass."""
    spellings = (f"{folder}/", f"/{folder}", f"{folder}\\", f"\\{folder}")
    lines = set()
    for node in ast.walk(ast.parse(source)):
        operands: list[ast.AST] = []
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            operands = [node.left, node.right]
        elif isinstance(node, ast.Call) and getattr(
            node.func, "attr", getattr(node.func, "id", None)
        ) in ("joinpath", "join", "Path", "PurePath"):
            operands = list(node.args)
        joined = any(isinstance(o, ast.Constant) and o.value == folder for o in operands)
        spelled = isinstance(node, ast.Constant) and isinstance(node.value, str)
        if joined or (spelled and any(s in node.value for s in spellings)):
            lines.add(node.lineno)
    return sorted(lines)


def test_folder_mentions_finds_every_form() -> None:
    name = VERIFIER_DIR
    source = textwrap.dedent(
        f"""
        a = policy_dir / "{name}"
        b = policy_dir.joinpath("{name}", "policy")
        c = os.path.join(root, "{name}")
        d = f"{{policy_dir}}/{name}/spec.json"
        e = Path("{name}")
        metrics = {{"{name}": 1}}
        g = cfg.{name}.label
        h = lines["x"]["{name}"]
        """
    )
    assert folder_mentions(source, name) == [2, 3, 4, 5, 6]


def test_only_the_method_api_names_the_verifier_folder() -> None:
    """A method hands its verifier back through MethodContext and the runner reads it with
    `load_saved_verifier`: nobody else builds the path, so nobody probes for it."""
    files = [
        path
        for folder in ("bench", "methods", "judges", "benchmarks", "examples", "tests")
        for path in sorted((REPO / folder).rglob("*.py"))
        if path != REPO / "bench" / "method_api.py"
    ]
    found = [
        f"{path.relative_to(REPO)}:{line}"
        for path in files
        for line in folder_mentions(path.read_text(encoding="utf-8"), VERIFIER_DIR)
    ]
    assert found == []
    api = (REPO / "bench" / "method_api.py").read_text(encoding="utf-8")
    assert f'\nVERIFIER_DIR = "{VERIFIER_DIR}"\n' in api  # the one place that names it


def test_the_scan_reads_the_real_sources() -> None:
    assert "bench.method_api" in imported_modules(
        (REPO / "methods" / "dpo.py").read_text(encoding="utf-8")
    )
    assert "bench.evaluate.verdicts" in imported_modules(
        (REPO / "judges" / "gold.py").read_text(encoding="utf-8")
    )


# --- no environment variable changes a default --------------------------------------------------

LIBRARY_PACKAGES = ("bench", "methods", "judges")

ALLOWED_ENVIRONMENT_READS: dict[tuple[str, str, str], str] = {
    # (file, function, variable: its name, or the expression naming it) -> why it may be read.
    # Launchers (torchrun, accelerate launch) tell each process where it stands.
    (
        "bench/train/distributed.py",
        "world_size",
        "WORLD_SIZE",
    ): "set by the launcher: the number of processes training together",
    ("bench/train/distributed.py", "rank", "RANK"): "set by the launcher: this process's index",
    ("bench/train/modeling.py", "device", "LOCAL_RANK"): "set by the launcher: this process's GPU",
    (
        "bench/evaluate/backends/vllm.py",
        "engine_devices",
        "LOCAL_RANK",
    ): "set by the launcher: the GPU this process's vLLM engine takes",
    ("bench/evaluate/backends/vllm.py", "engine_devices", "CUDA_VISIBLE_DEVICES"): "the GPUs the "
    "launcher (or the user) made visible; LOCAL_RANK indexes them",
    # The documented thread-count input (README, "CPU threads").
    (
        "bench/run/threads.py",
        "choose_threads",
        "OMP_NUM_THREADS",
    ): "the thread count when --threads is not given, OpenMP's own convention",
    ("bench/report/results.py", "_hardware", "OMP_NUM_THREADS"): "the thread count a run used, "
    "recorded in its provenance when torch is not loaded (bench.run.threads set it)",
    ("bench/run/threads.py", "configure", "name"): "OMP_WAIT_POLICY or GOMP_SPINCOUNT (WAITING): a "
    "waiting policy the user set is kept, never overridden",
    ("bench/run/threads.py", "waiting", "name"): "OMP_WAIT_POLICY and GOMP_SPINCOUNT (WAITING), "
    "reported as the process has them",
    # Where the cache lives, never what is computed (the flag --cache-dir wins).
    (
        "bench/run/cache.py",
        "Cache.default",
        "PFTBENCH_CACHE_DIR",
    ): "a cluster points the cache at a shared or scratch filesystem",
    ("bench/run/cache.py", "Cache.default", "XDG_CACHE_HOME"): "the XDG convention for user caches",
    # A secret stays out of every file: the LLM judge's API key is read from the variable whose
    # NAME its config gives (`api_key_env`).
    ("judges/llm_pairwise.py", "LlmPairwiseJudge._api_key", "name"): "the API key, from the "
    "variable the judge config names",
    ("bench/run/selection.py", "missing_resources", "key_env"): "a suite whose judge needs the key "
    "is skipped, saying so, when the variable its config names is unset",
    # Restoring what pftbench itself set.
    ("bench/evaluate/backends/vllm.py", "_environment", "name"): "the value before a vLLM engine's "
    "variables are set, restored when the engine closes",
}
"""Environment reads in library code. Each is an input by convention (a launcher's, OpenMP's,
XDG's), the cache's location, or a secret named by a config, and the README lists them
("Environment variables"); anything else a user can change is a flag or a suite key."""

_ENVIRONMENT_WRITES = {"update", "pop", "clear"}


def environment_reads(source: str) -> list[tuple[str, str]]:
    """(function, variable) of every read of the process environment in `source`:
    `os.environ.get(X)`, `os.getenv(X)`, `os.environ[X]`, `X in os.environ` (also with `environ`
    or `getenv` imported from os); any other use of the mapping (a copy, a loop over it) reads
    variable "*". Setting, updating and removing variables are not reads."""
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}

    def function_of(node: ast.AST) -> str:
        names = []
        while node in parents:
            node = parents[node]
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.append(node.name)
        return ".".join(reversed(names)) or "<module>"

    def variable(node: ast.AST | None) -> str:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        return "*" if node is None else ast.unparse(node)

    def is_os(node: ast.AST, attr: str) -> bool:
        return (
            isinstance(node, ast.Attribute)
            and node.attr == attr
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
        ) or (isinstance(node, ast.Name) and node.id == attr)

    reads = []
    for node in ast.walk(tree):
        parent = parents.get(node)
        if is_os(node, "getenv") and isinstance(parent, ast.Call) and parent.func is node:
            reads.append((function_of(node), variable(parent.args[0] if parent.args else None)))
        if not is_os(node, "environ"):
            continue
        if isinstance(parent, ast.Attribute) and parent.attr in _ENVIRONMENT_WRITES:
            continue
        if isinstance(parent, ast.Subscript) and not isinstance(parent.ctx, ast.Load):
            continue
        call = parents.get(parent)
        if isinstance(parent, ast.Attribute) and isinstance(call, ast.Call) and call.args:
            read = call.args[0]  # os.environ.get(X), .setdefault(X, ...)
        elif isinstance(parent, ast.Subscript):
            read = parent.slice
        elif isinstance(parent, ast.Compare) and isinstance(parent.ops[0], (ast.In, ast.NotIn)):
            read = parent.left
        else:
            read = None
        reads.append((function_of(node), variable(read)))
    return reads


def test_environment_reads_finds_every_form() -> None:
    source = textwrap.dedent(
        """
        import os
        from os import environ, getenv
        A = os.environ.get("A")
        class C:
            def f(self, name):
                b = os.getenv("B", "1") + getenv(name)
                if "C" in os.environ and os.environ["D"]:
                    os.environ["E"] = "set"
                    os.environ.update({"F": "1"})
                    os.environ.pop("G", None)
                    del os.environ["H"]
                return dict(os.environ), environ.get("I")
        """
    )
    assert sorted(environment_reads(source)) == [
        ("<module>", "A"),
        ("C.f", "*"),
        ("C.f", "B"),
        ("C.f", "C"),
        ("C.f", "D"),
        ("C.f", "I"),
        ("C.f", "name"),
    ]


def test_no_environment_variable_is_read_by_library_code_unless_allowed() -> None:
    found = set()
    for package in LIBRARY_PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            file = str(path.relative_to(REPO))
            found |= {(file, *read) for read in environment_reads(path.read_text("utf-8"))}
    unexpected = sorted(found - set(ALLOWED_ENVIRONMENT_READS))
    assert unexpected == [], (
        "library code reads the environment (make it an argument, or add an allow-list entry "
        f"saying why it is an input by convention, documented in the README): {unexpected}"
    )
    stale = sorted(set(ALLOWED_ENVIRONMENT_READS) - found)
    assert stale == [], f"allow-list entries no code reads any more: {stale}"


def test_every_allowed_environment_variable_is_in_the_readme() -> None:
    section = (REPO / "README.md").read_text("utf-8").split("### Environment variables", 1)[1]
    section = section.split("\n#", 1)[0]
    named = {variable for _, _, variable in ALLOWED_ENVIRONMENT_READS if variable.isupper()}
    named |= {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "api_key_env"}  # the entries read by name
    assert [v for v in sorted(named) if f"`{v}`" not in section] == []


# --- the gold judge -----------------------------------------------------------------------------

TASK = KeywordsTask(KeywordsParams())
# Salient w01, w02, w03 (three times each), fillers w10..w24 (once each).
PROMPT = format_prompt(["w01", "w02", "w03"] * 3 + [word(i) for i in range(10, 25)])
REFERENCE = "w01 w10"  # 1 salient - 0.1 * 2 words = 0.8


@pytest.mark.parametrize(
    ("output", "verdict", "output_score"),
    [
        (Sample("w01 w02 w03", 4, True), Verdict.WIN, 2.7),  # 3 - 0.3 = 2.7 > 0.8
        (Sample("w10 w11", 3, True), Verdict.LOSS, -0.2),  # 0 - 0.2 = -0.2 < 0.8
        (Sample("w02 w11", 3, True), Verdict.TIE, 0.8),  # 1 - 0.2 = 0.8 = 0.8
        (Sample("w01 w02 w03", 7, False), Verdict.INVALID, None),  # unfinished, however good
        (Sample("w01", 2, True), Verdict.INVALID, None),  # too short to be a summary
        (Sample("w01 hello", 3, True), Verdict.INVALID, None),  # not a word of the task
    ],
)
def test_gold_judge_by_hand(output: Sample, verdict: Verdict, output_score: float | None) -> None:
    (judgment,) = GoldJudge(TASK).judge([PROMPT], [output], [REFERENCE])
    assert judgment.verdict is verdict
    assert judgment.reference_score == pytest.approx(0.8)
    if output_score is None:
        assert judgment.output_score is None
    else:
        assert judgment.output_score == pytest.approx(output_score)


def test_gold_judge_judges_each_row_against_its_own_reference() -> None:
    outputs = [Sample("w01 w02", 3, True), Sample("w01 w02", 3, True)]
    # 2 - 0.2 = 1.8 against 0.8 (win) and against 3 - 0.3 = 2.7 (loss)
    judgments = GoldJudge(TASK).judge([PROMPT, PROMPT], outputs, [REFERENCE, "w03 w02 w01"])
    assert [j.verdict for j in judgments] == [Verdict.WIN, Verdict.LOSS]


def test_gold_judge_with_an_invalid_reference_is_invalid() -> None:
    (judgment,) = GoldJudge(TASK).judge([PROMPT], [Sample("w01 w02 w03", 4, True)], ["w01"])
    assert judgment.verdict is Verdict.INVALID
    assert judgment.reference_score is None


@pytest.mark.parametrize(
    ("output_score", "reference_score", "verdict"),
    [
        (1.0, 0.5, Verdict.WIN),
        (0.5, 1.0, Verdict.LOSS),
        (0.8, 0.8, Verdict.TIE),
        (0.1 + 0.2, 0.3, Verdict.TIE),  # 0.30000000000000004: a float-rounding tie is a tie
        (None, 0.5, Verdict.INVALID),
        (0.5, None, Verdict.INVALID),
        (None, None, Verdict.INVALID),
    ],
)
def test_gold_verdict(
    output_score: float | None, reference_score: float | None, verdict: Verdict
) -> None:
    assert gold_verdict(output_score, reference_score) is verdict


def test_gold_judge_needs_a_gold_reward() -> None:
    class NoGold(KeywordsTask):
        has_gold = False

    with pytest.raises(ValueError, match="needs a task with a gold reward"):
        GoldJudge(NoGold(KeywordsParams()))


def test_the_readme_and_ci_install_the_cpu_build_of_torch_the_same_way():
    # On PyPI, torch==2.13.0 for Linux is the CUDA build: a fresh CPU machine must be sent to
    # PyTorch's CPU index, and CI must install what the README's first line installs.
    first_command = (REPO / "README.md").read_text().split("```bash\n", 1)[1].split("\n")[0]
    cpu_wheel = "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
    assert f".venv/bin/pip install {cpu_wheel} && " in first_command
    assert f".venv/bin/pip install --quiet {cpu_wheel}\n" in (REPO / ".ci" / "run").read_text()


def test_the_readme_module_map_matches_the_tree():
    """Every module of bench/ is in the README's "Where the code lives", and every path there
    exists (subpackage paths are written relative to bench/, e.g. `run/runner.py`)."""
    import re

    readme = (REPO / "README.md").read_text()
    section = readme.split("### Where the code lives", 1)[1].split("\n- `pytest` runs", 1)[0]
    named = set()
    for path in re.findall(r"`((?:bench/)?[\w/]+(?:\.py|/))`", section):
        if "/" not in path.rstrip("/"):
            continue  # a file inside the folder just named, e.g. `base.py` of `bench/tasks/`
        if not path.startswith(("bench/", "methods/", "judges/")):
            path = f"bench/{path}"
        named.add(path)
        assert (REPO / path).exists(), f"the README's module map names {path}, which does not exist"
    modules = {
        str(p.relative_to(REPO))
        for p in (REPO / "bench").rglob("*.py")
        if p.name != "__init__.py"
        and not any(f"bench/{d}/" in str(p) for d in ("tasks", "evaluate/backends"))
    }
    missing = sorted(m for m in modules if m not in named)
    assert not missing, f"modules missing from the README's module map: {missing}"
