"""docs/recovery-by-hand.md, followed literally with the stock binaries.

The page's ```sh blocks run in order in one bash session under a terminal, and the
passphrase is typed when age asks for it, as an operator would. The only change to the
page is the value of IMAGE and WORK in its first block.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from tests.support.modules import run_module
from tests.support.terminal import run_in_terminal
from tests.support.trees import PASSPHRASE, make_config_tree, snapshot

DOC = Path(__file__).resolve().parents[2] / "docs" / "recovery-by-hand.md"


def doc_blocks():
    """The page's ```sh blocks, in order."""
    return re.findall(r"^```sh\n(.*?)^```$", DOC.read_text(), flags=re.S | re.M)


def test_recovery_page_as_written(tmp_path):
    (tmp_path / "dest").mkdir()
    source = make_config_tree(tmp_path / "src")
    os.link(source / "platform_settings.py", source / "conf.d" / "settings-link.py")  # #18.15: stock tar links it again
    started = run_module(
        "backup_session", state="started", destination=str(tmp_path / "dest"), state_dir=str(tmp_path / "state"), passphrase=PASSPHRASE, facts_dir=""
    )
    work_dir = started["session"]["work_dir"]
    assert not run_module("config_archive", session=work_dir, paths=[str(source)]).failed
    image = run_module("backup_session", state="sealed", session=work_dir)["image"]

    blocks = doc_blocks()
    assert len(blocks) >= 8, "the page lost code blocks"
    work = tmp_path / "recovery"
    first = blocks[0]
    assert first.startswith("IMAGE=") and "\nWORK=" in first, "the first block must set IMAGE and WORK"
    blocks[0] = re.sub(r"^IMAGE=\S+", "IMAGE=%s" % image, first, flags=re.M)
    blocks[0] = re.sub(r"^WORK=\S+", "WORK=%s" % work, blocks[0], flags=re.M)
    *steps, cleanup = blocks

    status, output = run_in_terminal("\n".join(steps), PASSPHRASE)
    assert status == 0, output[-4000:]
    assert "BAD" not in output
    assert output.count("OK ") >= 10
    restored = work / "restored" / str(source).lstrip("/")
    assert snapshot(restored, relative_to=restored) == snapshot(source, relative_to=source)
    assert os.stat(restored / "conf.d" / "settings-link.py").st_ino == os.stat(restored / "platform_settings.py").st_ino

    status, output = run_in_terminal("\n".join([blocks[0], cleanup]), PASSPHRASE)
    assert status == 0, output
    assert not work.exists()
