"""docs/elasticsearch.md section 8, followed literally with the stock binaries against a real server.

The page's ```sh blocks run in order in one bash session under a terminal (age asks for
the passphrase there, as it would an operator). The only changes are the values of the
first block's variables, and the repository name, which gets the test's namespace prefix.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.integration.test_recovery_doc import run_in_terminal
from tests.support.modules import run_module
from tests.support.search import PASSPHRASE, conn, doc_counts, documents, make_indices, register, seal, start_session

DOC = Path(__file__).resolve().parents[2] / "docs" / "elasticsearch.md"


def doc_blocks():
    return re.findall(r"^```sh\n(.*?)^```$", DOC.read_text(), flags=re.S | re.M)


def test_restore_from_an_image_by_hand_as_written(opensearch_server, namespace, tmp_path):
    es = opensearch_server
    indices, _alias = make_indices(es, namespace, {"alpha": 30, "beta": 20})
    before = doc_counts(es, indices)
    sample = documents(es, f"{namespace}-alpha", ["3", "17"])
    repository = f"{namespace}-repo"
    register(es, repository, es.repo_dir / namespace)
    work_dir = start_session(tmp_path)
    taken = run_module("elasticsearch_snapshot", repository=repository, indices=[f"{namespace}-*"], session=work_dir, include_repository_files=True, **conn(es))
    assert taken.rc == 0, taken
    image = seal(work_dir)["image"]
    es.request("DELETE", "/" + ",".join(indices))

    blocks = doc_blocks()
    assert len(blocks) == 5, "section 8 of docs/elasticsearch.md changed its code blocks"
    first = blocks[0]
    values = {"IMAGE": image, "WORK": tmp_path / "recovery", "ES": es.url, "REPO": es.repo_dir / f"{namespace}-by-hand", "ES_USER": es.account.pw_name}
    for name, value in values.items():
        assert re.search(r"^%s=\S+$" % name, first, flags=re.M), "the first block must set %s" % name
        first = re.sub(r"^%s=\S+$" % name, "%s=%s" % (name, value), first, flags=re.M)
    script = "\n".join([first, *blocks[1:]]).replace("/_snapshot/from-image", f"/_snapshot/{namespace}-from-image")

    status, output = run_in_terminal(script, PASSPHRASE, timeout=300)
    assert status == 0, output[-4000:]
    assert "snapshot: %s" % taken["snapshot"]["name"] in output
    assert doc_counts(es, indices) == before
    assert documents(es, f"{namespace}-alpha", ["3", "17"]) == sample
    assert not (tmp_path / "recovery").exists()
    repo = es.request("GET", f"/_snapshot/{namespace}-from-image").json()[f"{namespace}-from-image"]
    assert repo["settings"]["readonly"] == "true"
