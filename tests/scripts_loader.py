"""Import a file of ``scripts/`` as a module (the scripts are not a package), for their tests."""

import importlib.util
from pathlib import Path


def load_script(name: str):
    path = Path(__file__).parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
