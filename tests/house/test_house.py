"""The house rules of issue 29 that a reader can check without running a model: file sizes and
where other libraries' private names may be used."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "cachekit"

#: other libraries' private attributes cachekit reads or writes: diffusers' hook registry and
#: context-parallel config, accelerate's offload hook, torch.compile's compiled call
FOREIGN = {"_diffusers_hook", "_fn_refs", "_hf_hook", "_old_forward", "_parallel_config", "_compiled_call_impl"}


def _sources():
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_of_the_package_is_over_400_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in _sources() if (n := len(p.read_text().splitlines())) > 400}
    assert not long, f"modules over 400 lines: {long}"


def test_foreign_private_names_are_used_only_in_runtime_interop():
    uses = []
    for path in _sources():
        if path.relative_to(PACKAGE).as_posix() == "runtime/interop.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            name = (node.attr if isinstance(node, ast.Attribute)
                    else node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None)
            if name in FOREIGN:
                uses.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {name}")
    assert not uses, f"other libraries' private names outside runtime/interop.py: {uses}"
