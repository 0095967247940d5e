"""Fetch and unpack the search-engine distributions the integration tests run.

OpenSearch and Elasticsearch are neither Debian nor PyPI packages; their
``integ-test-zip`` distributions (no bundled JDK, no security plugin) are on
Maven Central. ``python -m tests.harness.fetch`` (``make servers``) copies each
zip with Maven into ``${LIFEBOAT_CACHE:-~/.cache/lifeboat}/dist/`` and unpacks
it once; a warm run only checks that the unpacked directories exist.

Adding a server version is one line in ``DISTRIBUTIONS``. Neo4j (jars, not a zip)
is fetched by ``ensure_neo4j()`` at ``NEO4J_VERSION``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

# Maven groupId of each engine's integ-test-zip; artifactId is the engine name.
MAVEN_GROUPS = {
    "opensearch": "org.opensearch.distribution.integ-test-zip",
    "elasticsearch": "org.elasticsearch.distribution.integ-test-zip",
}
# Pinned so that every run tests the same bits.
MAVEN_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"


@dataclass(frozen=True)
class Distribution:
    engine: str
    version: str

    @property
    def name(self) -> str:
        return f"{self.engine}-{self.version}"

    @property
    def coordinates(self) -> str:
        return f"{MAVEN_GROUPS[self.engine]}:{self.engine}:{self.version}:zip"

    @property
    def major(self) -> int:
        return int(self.version.split(".", 1)[0])


# One line per server version. The first line of an engine is its default.
DISTRIBUTIONS = (
    Distribution("opensearch", "2.19.6"),
    Distribution("elasticsearch", "7.17.29"),
    Distribution("elasticsearch", "8.19.21"),
)


class FetchError(RuntimeError):
    """A distribution could not be had; the message says what to do."""


def cache_dir() -> Path:
    return Path(os.environ.get("LIFEBOAT_CACHE") or Path.home() / ".cache" / "lifeboat")


def dist_dir() -> Path:
    return cache_dir() / "dist"


def find(engine: str, version: str | None = None) -> Distribution:
    """The table entry for engine (and version; default: the engine's first line)."""
    for dist in DISTRIBUTIONS:
        if dist.engine == engine and (version is None or dist.version == version):
            return dist
    known = ", ".join(d.name for d in DISTRIBUTIONS)
    raise FetchError(f"no distribution {engine} {version or ''} in tests/harness/fetch.py DISTRIBUTIONS (known: {known}); add a line there to use it")


def home(dist: Distribution) -> Path:
    """Where the distribution is unpacked. It exists only once complete."""
    return dist_dir() / dist.name


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _maven_copy(dist: Distribution, into: Path) -> Path:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise FetchError(f"cannot fetch {dist.name}: 'mvn' is not installed (apt-get install maven, or run scripts/install-os-deps.sh)")
    cmd = [
        mvn,
        "-q",
        "-B",
        f"{MAVEN_DEPENDENCY_PLUGIN}:copy",
        f"-Dartifact={dist.coordinates}",
        f"-DoutputDirectory={into}",
    ]
    # No project here: run in the empty download dir so a stray pom.xml is never picked up.
    proc = subprocess.run(cmd, cwd=into, capture_output=True, text=True, check=False)
    zips = list(into.glob("*.zip"))
    if proc.returncode != 0 or len(zips) != 1:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise FetchError(
            f"cannot fetch {dist.name} from Maven Central ({dist.coordinates}): mvn exited {proc.returncode}. "
            f"Check network access to https://repo1.maven.org and that the version exists.\n{tail}"
        )
    return zips[0]


def _unpack(archive: Path, into: Path) -> Path:
    """Unpack keeping the Unix modes (zipfile alone drops the executable bits)."""
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            target = Path(zf.extract(info, into))
            mode = (info.external_attr >> 16) & 0o777
            if mode and not info.is_dir():
                target.chmod(mode)
    tops = [p for p in into.iterdir() if p.is_dir()]
    if len(tops) != 1:
        raise FetchError(f"{archive.name}: expected one top-level directory, found {[p.name for p in tops]}")
    return tops[0]


def ensure(dist: Distribution) -> Path:
    """Return the unpacked home of dist, downloading it first if needed.

    Safe to call from parallel processes: the first one downloads under a
    lock, the others wait and then find it done.
    """
    target = home(dist)
    if target.is_dir():
        return target
    with _locked(dist_dir() / f".{dist.name}.lock"):
        if target.is_dir():
            return target
        # Work next to the target so the final rename is atomic (same file system).
        with tempfile.TemporaryDirectory(prefix=f".{dist.name}-", dir=dist_dir()) as work:
            work_path = Path(work)
            download = work_path / "download"
            download.mkdir()
            archive = _maven_copy(dist, download)
            top = _unpack(archive, work_path / "unpacked")
            if not (top / "bin" / dist.engine).is_file():
                raise FetchError(f"{archive.name} has no bin/{dist.engine}; not a server distribution")
            top.rename(target)
    return target


# ---- Neo4j community (jars) -------------------------------------------------

# Neo4j publishes no server zip on Maven Central, but the server is org.neo4j:neo4j and
# its runtime dependencies: Maven resolves them from a throw-away pom into lib/, and
# tests/harness/neo4j.py runs `org.neo4j.server.startup.Neo4jCommand console` (what
# `bin/neo4j console` runs) on that classpath.
NEO4J_VERSION = "5.26.30"
_NEO4J_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>lifeboat.test</groupId>
  <artifactId>neo4j-server-jars</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.neo4j</groupId><artifactId>neo4j</artifactId><version>{version}</version></dependency>
  </dependencies>
</project>
"""


def neo4j_home(version: str = NEO4J_VERSION) -> Path:
    """Where the Neo4j jars of ``version`` are (``<it>/lib/*.jar``). It exists only once complete."""
    return dist_dir() / f"neo4j-{version}"


def ensure_neo4j(version: str = NEO4J_VERSION) -> Path:
    """Return neo4j_home(version), resolving the jars with Maven first if needed (locked like ensure())."""
    target = neo4j_home(version)
    if target.is_dir():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise FetchError(f"cannot fetch Neo4j {version}: 'mvn' is not installed (apt-get install maven, or run scripts/install-os-deps.sh)")
    with _locked(dist_dir() / f".neo4j-{version}.lock"):
        if target.is_dir():
            return target
        with tempfile.TemporaryDirectory(prefix=f".neo4j-{version}-", dir=dist_dir()) as work:
            work_path = Path(work)
            (work_path / "pom.xml").write_text(_NEO4J_POM.format(version=version), encoding="utf-8")
            top = work_path / "neo4j"
            cmd = [mvn, "-q", "-B", f"{MAVEN_DEPENDENCY_PLUGIN}:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={top / 'lib'}"]
            proc = subprocess.run(cmd, cwd=work_path, capture_output=True, text=True, check=False)
            if proc.returncode != 0 or not (top / "lib" / f"neo4j-{version}.jar").is_file():
                tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
                raise FetchError(
                    f"cannot fetch Neo4j {version} (org.neo4j:neo4j and its dependencies) from Maven Central: mvn exited {proc.returncode}. "
                    f"Check network access to https://repo1.maven.org and that the version exists.\n{tail}"
                )
            top.rename(target)
    return target


# ---- C2SP age test vectors (CCTV) ---------------------------------------------

# The age test vectors (https://c2sp.org/CCTV/age) are published as the Go module
# c2sp.org/CCTV/age; the Go module proxy serves each version as a zip over plain HTTPS
# (no Go needed). Pinned by version and by the zip's SHA-256; only testdata/ is kept.
CCTV_AGE_VERSION = "v0.0.0-20251208015420-e9274a7bdbfd"
CCTV_AGE_SHA256 = "c6581aa36f3b0f02d03671ea5ab6531b2328adbabaf66d71035c69659daa300c"
# Module paths are case-encoded in proxy URLs: each capital letter becomes "!" + lower case.
CCTV_AGE_URL = f"https://proxy.golang.org/c2sp.org/!c!c!t!v/age/@v/{CCTV_AGE_VERSION}.zip"


def cctv_age_dir(version: str = CCTV_AGE_VERSION) -> Path:
    """Where the vectors are (``<it>/<vector name>``). It exists only once complete."""
    return dist_dir() / f"cctv-age-{version}"


def ensure_cctv_age() -> Path:
    """Return cctv_age_dir(), downloading and checking the module zip first if needed (locked like ensure())."""
    target = cctv_age_dir()
    if target.is_dir():
        return target
    with _locked(dist_dir() / f".cctv-age-{CCTV_AGE_VERSION}.lock"):
        if target.is_dir():
            return target
        try:
            with urllib.request.urlopen(CCTV_AGE_URL, timeout=60) as response:
                data = response.read()
        except OSError as exc:
            raise FetchError(f"cannot fetch the C2SP age test vectors from {CCTV_AGE_URL}: {exc}. Check network access to the Go module proxy.") from None
        digest = hashlib.sha256(data).hexdigest()
        if digest != CCTV_AGE_SHA256:
            raise FetchError(f"{CCTV_AGE_URL} has SHA-256 {digest}, expected {CCTV_AGE_SHA256}: not the pinned test vectors")
        with tempfile.TemporaryDirectory(prefix=".cctv-age-", dir=dist_dir()) as work:
            vectors = Path(work) / "testdata"
            vectors.mkdir()
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                for name in zf.namelist():
                    parent, _slash, leaf = name.rpartition("/")
                    if parent.endswith("/testdata") and leaf:
                        (vectors / leaf).write_bytes(zf.read(name))
            if not any(vectors.iterdir()):
                raise FetchError(f"{CCTV_AGE_URL} holds no testdata/ directory")
            vectors.rename(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.harness.fetch", description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("names", nargs="*", metavar="ENGINE-VERSION", help="e.g. opensearch-2.19.6 (default: every distribution in the table)")
    parser.add_argument("--list", action="store_true", help="print the table and where each distribution is unpacked")
    args = parser.parse_args(argv)

    by_name = {d.name: d for d in DISTRIBUTIONS}
    neo4j_name = f"neo4j-{NEO4J_VERSION}"
    want_neo4j = not args.names or neo4j_name in args.names
    names = [n for n in args.names if n != neo4j_name]
    unknown = [n for n in names if n not in by_name]
    if unknown:
        parser.error(f"unknown distribution(s) {unknown}; known: {sorted([*by_name, neo4j_name])}")
    wanted = [by_name[n] for n in names] if args.names else list(DISTRIBUTIONS)

    if args.list:
        for dist in wanted:
            state = "unpacked" if home(dist).is_dir() else "missing"
            print(f"{dist.name:24} {state:9} {home(dist)}")
        if want_neo4j:
            state = "unpacked" if neo4j_home().is_dir() else "missing"
            print(f"{neo4j_name:24} {state:9} {neo4j_home()}")
        return 0

    failed = 0
    for dist in wanted:
        cold = not home(dist).is_dir()
        start = time.monotonic()
        try:
            path = ensure(dist)
        except FetchError as exc:
            print(f"ERROR: {exc}", file=sys.stderr)
            failed += 1
            continue
        if cold:
            print(f"==> {dist.name}: fetched and unpacked into {path} in {time.monotonic() - start:.1f}s", file=sys.stderr)
    if want_neo4j:
        cold = not neo4j_home().is_dir()
        start = time.monotonic()
        try:
            path = ensure_neo4j()
        except FetchError as exc:
            print(f"ERROR: {exc}", file=sys.stderr)
            failed += 1
        else:
            if cold:
                print(f"==> {neo4j_name}: jars fetched into {path} in {time.monotonic() - start:.1f}s", file=sys.stderr)
    if not args.names:
        try:
            ensure_cctv_age()
        except FetchError as exc:
            print(f"ERROR: {exc}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
