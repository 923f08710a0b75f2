"""Every code block in README.md is exercised by a test.

The two set-up commands are checked against what CI runs and what the example tests run; every other
block must appear, to the letter, in one of the documentation pages whose blocks their own tests run
(docs/*.md, examples/nginx/README.md). So a README block cannot drift from the code it describes
without a test failing here or there.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FENCE = re.compile(r"^```[a-z]*\n.*?^```\n", re.S | re.M)

# Each tested page, and the test files that run its blocks.
TESTED_PAGES = {
    "docs/projectr.md": "tests/projectr/test_projectr_docs.py",
    "docs/prefork.md": "tests/prefork/test_prefork_docs.py",
    "docs/integration.md": "tests/integration/test_readme_idiom.py",
    "docs/operations.md": "tests/prefork/test_ctl.py",
    "docs/reliability.md": "tests/reliability/test_docs.py",
    "examples/nginx/README.md": "tests/prefork/test_upstream.py",
    "docs/asgi.md": "tests/asgi/test_asgi_docs.py",
}


def code_blocks(path: Path) -> list[str]:
    """The fenced code blocks of a Markdown file, fences included."""
    return FENCE.findall(path.read_text())


def setup_commands() -> list[str]:
    """The one-line commands of the README's "Set up" section."""
    section = README.read_text().split("## Set up", 1)[1].split("\n## ", 1)[0]
    return [block.splitlines()[1] for block in FENCE.findall(section)]


def test_ci_runs_the_readme_test_command_verbatim():
    run_example, run_tests = setup_commands()
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert run_tests in ci_lines, "the README's test command must be a line of .ci/run"
    assert "pytest" in run_tests


def test_the_run_command_starts_the_example_that_the_integration_tests_run():
    run_example, _ = setup_commands()
    assert run_example.endswith(".venv/bin/python examples/server.py")
    assert "pip install -q -e ." in run_example
    example_tests = (ROOT / "tests" / "integration" / "integration_util.py").read_text()
    assert "examples/server.py" in example_tests or '"server.py"' in example_tests


@pytest.mark.parametrize("page, test_file", sorted(TESTED_PAGES.items()))
def test_each_tested_page_is_read_by_its_test(page, test_file):
    source = (ROOT / test_file).read_text()
    assert Path(page).name in source, f"{test_file} no longer reads {page}"


def test_every_other_readme_block_is_a_tested_block():
    setup = set(setup_commands())
    tested = {block for page in TESTED_PAGES for block in code_blocks(ROOT / page)}
    untested = [block for block in code_blocks(README)
                if block.splitlines()[1] not in setup and block not in tested]
    assert not untested, "README blocks that no test runs:\n" + "\n".join(untested)
