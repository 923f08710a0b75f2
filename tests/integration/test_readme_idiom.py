"""The README's program (docs/integration.md, "The program") runs exactly as written.

The code block is taken from the document itself; the only change is the address (127.0.0.1 and a
free port instead of the default 0.0.0.0 and 8000). It runs in a folder holding a copy of
examples/myproject, so its relative path works.
"""
from __future__ import annotations

import re
import shutil
import signal

from tests.integration.integration_util import EXAMPLES, FAILURE_HEAD, PYTHON, REPO, STILL_SERVING, SUCCESS_LINE, rewrite

DOC = REPO / "docs" / "integration.md"


def readme_program() -> str:
    """The first python block after the heading "## The program" in docs/integration.md."""
    text = DOC.read_text()
    section = text[text.index("## The program"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_program_serves_reloads_and_answers_sighup(launcher, tmp_path):
    program = readme_program()
    assert "server.add_io_handler(watcher, lambda w: server.reload() if w.changed_files() else None)" in program
    assert program.count("port=8000") == 1
    shutil.copytree(EXAMPLES / "myproject", tmp_path / "examples" / "myproject",
                    ignore=shutil.ignore_patterns("__pycache__"))
    script = tmp_path / "readme_program.py"

    def command(port: int) -> list[str]:
        # The only changes: a free port, and loopback (tests never listen on other addresses).
        script.write_text(program.replace("port=8000", f'host="127.0.0.1", port={port}'))
        return [PYTHON, str(script)]

    server = launcher.start(command, workers=2, cwd=tmp_path)
    assert all(s["version"] == "1.0" for s in server.statuses())

    rewrite(tmp_path / "examples/myproject/myproject/version.py", '"1.0"', '"2.0"')
    server.wait_all(lambda s: s["version"] == "2.0" and s["generation"] == 1, "the edit served")

    server.signal(signal.SIGHUP)  # the program's own handler: server.reload()
    server.wait_all(lambda s: s["generation"] == 2, "the SIGHUP reload")

    server.signal(signal.SIGTERM)
    assert server.proc.wait(timeout=15) == 0


def test_doc_log_examples_have_the_real_format():
    blocks = [b for b in re.findall(r"```text\n(.*?)```", DOC.read_text(), re.S)
              if not b.startswith("prefork master")]  # the process tree
    assert len(blocks) == 3
    success, failure, hang = (block.splitlines() for block in blocks)
    assert len(success) == 3 and all(SUCCESS_LINE.match(line) for line in success), success
    assert [re.search(r": (\d+ modules|fresh generation|workers respawned)", line).group(1).split()[-1]
            for line in success] == ["modules", "generation", "respawned"]
    for block in (failure, hang):
        assert FAILURE_HEAD.match(block[0]), block[0]
        assert block[-1] in {STILL_SERVING.format(n) for n in range(10)}, block[-1]
        assert all(line.startswith("  ") for line in block[1:])
