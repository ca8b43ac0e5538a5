"""RunnerHub's own container images, made on this machine without any registry image
(`make image`, `deploy/container/`):

- `localhost/runnerhub:latest` (the node image): a Debian root file system from Debian's
  packages (python3 and its venv module only, made with `mmdebstrap` and `podman import`ed,
  as the runner image's base is: `podman.py`), RunnerHub installed in `/opt/runnerhub` from
  a wheel of this checkout, its dependencies from wheels downloaded on the host at exactly
  the versions and hashes of `requirements.lock` (`deploy/container/Containerfile`).
- `localhost/runnerhub-infra:latest` (the evaluation stack's servers): the same recipe's
  root file system with etcd, PostgreSQL, HAProxy and Redis added from Debian's packages
  (`deploy/container/Containerfile.infra`). A second image, not those packages in the
  node's: the node image is what runs in production, and every program in it is one more
  to patch and one more an attacker could use; PostgreSQL and etcd run from their own
  packages or images there, the infra image exists only for `deploy/compose/`.

Both root file systems are kept in the user's cache under a hash of their recipe (like the
runner's), and each built image is saved there as an archive (`podman save`, loadable by
`podman load` and `docker load`) under a hash of everything that went into it (the recipe,
the Containerfile, the locked dependencies, RunnerHub's sources): a second build of the
same checkout loads the archive in seconds. Podman runs with a configuration and storage of
its own (`ImageEngine`): the `runc` runtime (`crun` refuses this machine's hybrid cgroups),
explicit ulimits, and nothing of the host's containers touched.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import Marker, default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from runnerhub.dev.cluster.podman import (
    CONTAINERS_CONF,
    PodmanError,
    find_podman,
    image_exists,
    mmdebstrap_tar,
    run_podman,
)

NODE_IMAGE = "localhost/runnerhub:latest"
INFRA_IMAGE = "localhost/runnerhub-infra:latest"
SUITE = "bookworm"
# The checkout this module belongs to (src/runnerhub/dev/cluster/node_image.py).
CHECKOUT = Path(__file__).resolve().parents[4]
CONTAINER_DIR = CHECKOUT / "deploy" / "container"
LOCK = CHECKOUT / "requirements.lock"
PATRONI_LOCK = CHECKOUT / "patroni.lock"  # Patroni's version and hash, as `make deps` installs
# Leave out what nobody reads in a container (manual pages, documentation, translations),
# but keep each package's copyright file, as Debian's licences ask.
SLIM = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/info/*",
)


@dataclass(frozen=True)
class Rootfs:
    """How one base root file system is made: `mmdebstrap` arguments, nothing else."""

    name: str
    packages: tuple[str, ...]
    # Run in the new root file system before it is packed ($1 is its path).
    customize: tuple[str, ...] = ()

    def argv(self, out: Path) -> list[str]:
        return [
            "--variant=essential",
            "--format=tar",
            "--include=" + ",".join(self.packages),
            *(f"--dpkgopt={o}" for o in SLIM),
            *(f"--customize-hook={h}" for h in self.customize),
            SUITE,
            str(out),
        ]

    @property
    def key(self) -> str:
        return _digest(json.dumps(self.argv(Path("OUT"))).encode())


# libstdc++6: grpcio's wheel (etcd's client) links to it, as manylinux wheels may.
NODE_ROOTFS = Rootfs("node", ("python3", "python3-venv", "ca-certificates", "libstdc++6"))
INFRA_ROOTFS = Rootfs(
    "infra",
    (*NODE_ROOTFS.packages, "etcd-server", "postgresql", "patroni", "haproxy", "redis-server"),
    # The packages' own cluster (a PostgreSQL data directory made at install): the stack
    # makes its own in a volume.
    customize=('rm -rf "$1"/var/lib/postgresql/15/main "$1"/etc/postgresql/15/main',),
)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "runnerhub"


def _replace_cached(prefix: str, path: Path, source: Path) -> None:
    """Put `source` at `path` (in the cache), dropping older files of the same `prefix`
    (and what was kept beside them)."""
    for old in path.parent.glob(f"{prefix}-*"):
        if old.is_file() and not old.name.startswith(path.name):
            old.unlink(missing_ok=True)
    partial = path.with_suffix(".partial")
    shutil.copyfile(source, partial)
    partial.replace(path)


def build_rootfs(recipe: Rootfs, out: Path) -> Path:
    return mmdebstrap_tar(recipe.argv, out, recipe.name)


def cached_rootfs(recipe: Rootfs) -> Path:
    """The recipe's root file system tar, from the cache or made (and cached)."""
    path = cache_dir() / f"{recipe.name}-rootfs-{recipe.key}.tar"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            made = build_rootfs(recipe, Path(tmp) / "rootfs.tar")
            _replace_cached(f"{recipe.name}-rootfs", path, made)
    return path


# -- RunnerHub's wheels ---------------------------------------------------------------------


def target_python(rootfs: Path) -> str:
    """The version of the python3 a root file system tar holds (from its dpkg status), kept
    beside it: dependencies' markers are evaluated for it, not for the host's Python."""
    memo = rootfs.with_name(rootfs.name + ".python")
    if memo.exists():
        return memo.read_text().strip()
    with tarfile.open(rootfs) as tar:
        member = tar.extractfile("./var/lib/dpkg/status")
        status = member.read().decode() if member is not None else ""
    match = re.search(
        r"^Package: python3\.\d+\n(?:[^\n]+\n)*?Version: (\d+\.\d+\.\d+)", status, re.M
    )
    if match is None:
        raise PodmanError(f"{rootfs}: no python3 package in it")
    memo.write_text(match.group(1))
    return match.group(1)


def marker_env(python: str) -> dict[str, str]:
    """Marker variables for CPython `python` on this machine's platform (Linux)."""
    env = {k: str(v) for k, v in default_environment().items()}
    major_minor = ".".join(python.split(".")[:2])
    env.update(
        python_full_version=python,
        python_version=major_minor,
        implementation_name="cpython",
        implementation_version=python,
        platform_python_implementation="CPython",
    )
    return env


def runtime_closure(env: dict[str, str], dist: str = "runnerhub") -> set[str]:
    """The names of every package `dist` needs at run time under the marker variables
    `env` (no extras of its own, its dependencies' named extras included), read from what
    is installed here: the virtualenv holds exactly the locked versions."""
    names: set[str] = set()
    seen: set[tuple[str, frozenset[str]]] = set()
    todo: list[tuple[str, frozenset[str]]] = [(canonicalize_name(dist), frozenset())]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        names.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            # Not installed here: its marker is false for this Python, true for the
            # image's (async-timeout below Python 3.11.3). Taken without its own
            # dependencies; `pip check` in the image build fails if it has any.
            continue
        for line in requires:
            req = Requirement(line)
            wanted = req.marker is None or any(
                req.marker.evaluate({**env, "extra": e}) for e in (extras or {""})
            )
            if wanted:
                todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    names.discard(canonicalize_name(dist))
    return names


def locked_subset(lock_text: str, names: set[str], env: dict[str, str]) -> str:
    """The entries of a hashed requirements file (uv's universal format) for `names`
    whose markers hold under `env`, the markers taken off (they were decided here, for
    the image's Python, which is not the one that downloads the wheels)."""
    out: list[str] = []
    keep = False
    for line in lock_text.splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            spec, _, rest = line.partition(" ;")
            marker = rest.rstrip(" \\").strip()
            keep = canonicalize_name(spec.split("==")[0]) in names and (
                not marker or Marker(marker).evaluate(env)
            )
            if keep:
                out.append(spec.rstrip(" \\") + " \\")
            continue
        if keep and not line.lstrip().startswith("#"):
            out.append(line)
    return "\n".join(out) + "\n"


def source_digest(root: Path = CHECKOUT) -> str:
    """A hash of what RunnerHub's wheel is made of: its sources and its metadata."""
    h = hashlib.sha256()
    files = [root / "pyproject.toml", root / "README.md"]
    files += sorted(
        p
        for p in (root / "src" / "runnerhub").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )
    for path in files:
        h.update(str(path.relative_to(root)).encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _pip(*args: str, cwd: Path | None = None) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=False,
    )
    if r.returncode != 0:
        raise PodmanError(f"pip {args[0]} failed: {(r.stdout + r.stderr)[-2000:]}")


def _download(requirements: Path) -> Path:
    """Every wheel `requirements` names (versions and hashes pinned) into the wheel store,
    which it returns. Kept between builds: pip takes a file already there when its hash
    matches."""
    store = cache_dir() / "wheels"
    store.mkdir(parents=True, exist_ok=True)
    _pip(
        "download",
        "--quiet",
        "--no-deps",
        "--require-hashes",
        "--only-binary=:all:",
        "--dest",
        str(store),
        "-r",
        str(requirements),
    )
    return store


def prepare_context(context: Path, requirements: str) -> None:
    """The node image's build context: `wheels/` holds RunnerHub's wheel (from this
    checkout), every locked dependency's wheel and `requirements.txt` (with hashes)."""
    wheels = context / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    (wheels / "requirements.txt").write_text(requirements)
    store = _download(wheels / "requirements.txt")
    wanted = {
        canonicalize_name(line.split("==")[0])
        for line in requirements.splitlines()
        if line and not line[0].isspace()
    }
    for wheel in store.glob("*.whl"):
        if canonicalize_name(wheel.name.split("-")[0]) in wanted:
            shutil.copy2(wheel, wheels / wheel.name)
    with tempfile.TemporaryDirectory() as tmp:
        # A copy of the sources, so a build leaves nothing (build/, *.egg-info) in them.
        src = Path(tmp) / "src"
        shutil.copytree(
            CHECKOUT,
            src,
            ignore=shutil.ignore_patterns(
                ".venv", ".git", "build", "tests", "bench", ".stamps", "*_cache", "__pycache__"
            ),
        )
        # Built as `pip install .` would (setuptools from PyPI, as pyproject.toml asks).
        _pip("wheel", "--quiet", "--no-deps", "-w", str(wheels), str(src))


def prepare_patroni(context: Path) -> None:
    """`patroni/` in the build context: Patroni's wheel at the version and hash of
    patroni.lock, and the lock as `requirements.txt`."""
    wheels = context / "patroni"
    wheels.mkdir(parents=True, exist_ok=True)
    shutil.copy2(PATRONI_LOCK, wheels / "requirements.txt")
    store = _download(PATRONI_LOCK)
    for wheel in store.glob("patroni-*.whl"):
        shutil.copy2(wheel, wheels / wheel.name)


# -- Podman of its own ------------------------------------------------------------------------


class ImageEngine:
    """Podman with a configuration and storage of its own under `base_dir` (no service:
    each call is a `podman` command). `env()` is what any other program that calls podman
    (podman-compose) needs to use the same storage."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir.resolve()
        # Podman refuses a run directory longer than 50 characters.
        tag = hashlib.sha256(str(self.base_dir).encode()).hexdigest()[:12]
        self.run_dir = Path("/tmp") / f"rh-img-{tag}"
        self.conf = self.base_dir / "containers.conf"
        self.storage_conf = self.base_dir / "storage.conf"

    def prepare(self) -> ImageEngine:
        self.base_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        networks = self.base_dir / "networks"
        networks.mkdir(exist_ok=True)
        self.conf.write_text(
            CONTAINERS_CONF
            # Still [engine]: per-boot state, not the host-wide /run/libpod.
            + f'tmp_dir = "{self.run_dir / "libpod"}"\n'
            # Networks podman-compose creates are defined here, not in /etc/containers.
            + f'[network]\nnetwork_config_dir = "{networks}"\n'
        )
        self.storage_conf.write_text(
            "[storage]\n"
            'driver = "overlay"\n'
            f'graphroot = "{self.base_dir / "storage"}"\n'
            f'runroot = "{self.run_dir}"\n'
        )
        return self

    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            "CONTAINERS_CONF": str(self.conf),
            "CONTAINERS_STORAGE_CONF": str(self.storage_conf),
        }

    def podman(self, *args: str, timeout_s: float = 600) -> str:
        return run_podman([str(find_podman())], args, self.env(), timeout_s)

    def has_image(self, image: str) -> bool:
        return image_exists(self.podman, image)

    def destroy(self) -> None:
        """Every container, network, volume and image of it, then its directories."""
        with contextlib.suppress(PodmanError, subprocess.TimeoutExpired):
            self.podman("system", "reset", "--force", timeout_s=120)
        shutil.rmtree(self.base_dir, ignore_errors=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)


# -- the images -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageSpec:
    image: str
    rootfs: Rootfs
    containerfile: Path
    with_wheels: bool
    with_patroni: bool = False  # Patroni from PyPI (patroni.lock) in the build context

    @property
    def base(self) -> str:
        return f"localhost/runnerhub-{self.rootfs.name}-base:latest"

    def key(self, requirements: str) -> str:
        parts = [self.image, self.rootfs.key, self.containerfile.read_text()]
        if self.with_wheels:
            parts += [requirements, source_digest()]
        if self.with_patroni:
            parts.append(PATRONI_LOCK.read_text())
        return _digest("\0".join(parts).encode())

    @property
    def cache_prefix(self) -> str:
        return self.image.split("/")[-1].split(":")[0] + "-image"


NODE_SPEC = ImageSpec(NODE_IMAGE, NODE_ROOTFS, CONTAINER_DIR / "Containerfile", True)
INFRA_SPEC = ImageSpec(
    INFRA_IMAGE, INFRA_ROOTFS, CONTAINER_DIR / "Containerfile.infra", False, with_patroni=True
)
SPECS = (NODE_SPEC, INFRA_SPEC)


def node_requirements() -> str:
    """requirements.txt of the node image: the locked runtime dependencies, with hashes,
    for the python3 of its base (whose root file system is made first if need be)."""
    env = marker_env(target_python(cached_rootfs(NODE_ROOTFS)))
    return locked_subset(LOCK.read_text(), runtime_closure(env), env)


def _build(engine: ImageEngine, spec: ImageSpec, requirements: str) -> None:
    engine.podman("import", str(cached_rootfs(spec.rootfs)), spec.base)
    with tempfile.TemporaryDirectory() as tmp:
        context = Path(tmp)
        if spec.with_wheels:
            prepare_context(context, requirements)
        if spec.with_patroni:
            prepare_patroni(context)
        engine.podman(
            "build",
            # Docker's format: OCI images have no HEALTHCHECK (Podman would drop it).
            "--format=docker",
            "--pull=never",
            f"--build-arg=BASE={spec.base}",
            f"--file={spec.containerfile}",
            f"--tag={spec.image}",
            str(context),
        )
    engine.podman("rmi", spec.base)


@dataclass(frozen=True)
class Built:
    image: str
    archive: Path
    from_cache: bool
    seconds: float


def archives(specs: Iterable[ImageSpec] = SPECS) -> Iterator[tuple[ImageSpec, Path]]:
    requirements = node_requirements()
    for spec in specs:
        yield spec, cache_dir() / f"{spec.cache_prefix}-{spec.key(requirements)}.tar"


def ensure_archives(specs: Iterable[ImageSpec] = SPECS, log: bool = False) -> list[Built]:
    """Each image's archive: from the cache, or built (in a throwaway storage) and cached."""
    built: list[Built] = []
    requirements = node_requirements()
    for spec, archive in archives(specs):
        start = time.monotonic()
        from_cache = archive.exists()
        if not from_cache:
            if log:
                print(f"building {spec.image} (no {archive})", file=sys.stderr, flush=True)
            archive.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=archive.parent) as tmp:
                builder = ImageEngine(Path(tmp) / "engine").prepare()
                try:
                    _build(builder, spec, requirements)
                    saved = Path(tmp) / "image.tar"
                    builder.podman("save", "--format=docker-archive", "-o", str(saved), spec.image)
                    _replace_cached(spec.cache_prefix, archive, saved)
                finally:
                    builder.destroy()
        built.append(Built(spec.image, archive, from_cache, time.monotonic() - start))
    return built


def ensure_images(engine: ImageEngine, specs: Iterable[ImageSpec] = SPECS) -> list[Built]:
    """Each image in `engine`'s storage, from its archive (`ensure_archives`)."""
    built = ensure_archives(specs)
    for b in built:
        engine.podman("load", "--quiet", "-i", str(b.archive))
    return built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runnerhub.dev.cluster.node_image",
        description="Build RunnerHub's node and infra images (no registry needed), write "
        "their archives to --out and load them into this host's Podman.",
    )
    parser.add_argument("--out", type=Path, default=CHECKOUT / "build")
    parser.add_argument("--no-load", action="store_true", help="only write the archives")
    args = parser.parse_args(argv)
    for b in ensure_archives(log=True):
        out = args.out / f"{b.image.split('/')[-1].split(':')[0]}-image.tar"
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(b.archive, out)
        how = "from the cache" if b.from_cache else "built"
        print(f"{b.image}: {how} in {b.seconds:.1f} s: {out}", flush=True)
        if not args.no_load:  # into this host's own storage, for `podman run`
            r = subprocess.run(
                [str(find_podman()), "load", "--quiet", "-i", str(out)],
                capture_output=True,
                text=True,
                check=False,
            )
            if r.returncode != 0:
                raise SystemExit(f"podman load -i {out}: {r.stderr.strip()}")
    return 0


if __name__ == "__main__":  # `make image`
    sys.exit(main())
