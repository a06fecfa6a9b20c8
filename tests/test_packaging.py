"""``pip install .`` ships the runtime only: training, model-making and test-builder code stays in the
repository's ``tools/`` (style guide 3.2). Checked on the package list setuptools computes from
``setup.cfg`` (what a wheel would hold) without building one."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def installed_packages() -> list[str]:
    from setuptools.config.setupcfg import read_configuration

    return read_configuration(ROOT / "setup.cfg")["options"]["packages"]


def installed_modules() -> dict[str, ast.Module]:
    files = {}
    for package in installed_packages():
        for path in sorted((ROOT / package.replace(".", "/")).glob("*.py")):
            files[str(path.relative_to(ROOT))] = ast.parse(path.read_text(), str(path))
    return files


def test_only_the_runtime_package_is_installed():
    packages = installed_packages()
    assert "pnpovss" in packages and "pnpovss.toyworld" in packages  # the shipped toy models load from here
    assert all(p == "pnpovss" or p.startswith("pnpovss.") for p in packages), packages


def test_no_installed_module_trains_or_builds_test_models():
    modules = installed_modules()
    assert "pnpovss/pipeline.py" in modules and "pnpovss/toyworld/world.py" in modules
    names = {Path(f).stem for f in modules}
    assert not names & {"train_blip", "train_clip", "baselines", "testing", "testing_clip"}
    for file, tree in modules.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                imported = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(n == "tools" or n.startswith("tools.") for n in imported), f"{file} imports tools/"
            # an optimiser or a .backward() call is training; GradCAM uses torch.autograd.grad
            if isinstance(node, ast.Attribute):
                assert node.attr not in {"optim", "backward"}, f"{file}:{node.lineno} trains ({node.attr})"


def test_training_tools_live_in_the_repository():
    for path in ("tools/testing.py", "tools/toyworld/train_blip.py", "tools/toyworld/train_clip.py",
                 "tools/toyworld/baselines.py"):
        assert (ROOT / path).is_file(), path


def test_named_presets_and_spaces_are_package_data():
    """``--preset NAME`` and ``--space NAME`` read JSON shipped with the package."""
    from setuptools.config.setupcfg import read_configuration

    data = read_configuration(ROOT / "setup.cfg")["options"]["package_data"]["pnpovss"]
    for pattern in ("presets/*.json", "search/spaces/*.json"):
        assert pattern in data and list((ROOT / "pnpovss").glob(pattern)), pattern
