"""A container engine of its own for the container backend: Podman's Docker-compatible API
service (`podman system service`) with its own storage, run directory and socket under
`base_dir`, so nothing of the host's containers is touched. It uses the `runc` runtime
(Debian's default, `crun`, refuses this machine's hybrid cgroups) and explicit `nofile` and
`nproc` limits.

The runner image is made without any registry: a Debian root file system from Debian's
packages (`mmdebstrap`: python3; `build_runner_rootfs`, `make runner-image`), imported with
`podman import` as the base, then built with the runner simulator's Containerfile
(`dev/sim/Containerfile`, `build_runner_image`).
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from runnerhub.dev.cluster.process import ManagedProcess, find_binary, wait_ready

RUNNER_IMAGE = "localhost/runnerhub-runner:latest"
RUNNER_BASE_IMAGE = "localhost/runnerhub-runner-base:latest"
RUNNER_SCRIPT = "/opt/runnerhub/runner.py"  # the runner simulator, inside the image
# The image's recipe; its directory (the simulator's) is the build context.
CONTAINERFILE = Path(__file__).resolve().parents[1] / "sim" / "Containerfile"
CONTAINERS_CONF = """\
# written by RunnerHub's local cluster
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
# Locks in files under this engine's own directories, not in the host-wide shared memory
# segment that every rootful Podman shares (two engines here would take each other's).
lock_type = "file"
"""


class PodmanError(Exception):
    pass


def find_podman() -> Path:
    return find_binary("podman", PodmanError, "apt-get install podman runc")


def mmdebstrap_tar(argv: Callable[[Path], list[str]], out: Path, what: str) -> Path:
    """A Debian root file system as a tar at `out`, made by mmdebstrap with `argv(partial)`
    (its arguments, ending with where to write); `out` appears only once it is whole."""
    mmdebstrap = find_binary("mmdebstrap", PodmanError, "apt-get install mmdebstrap")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial")
    r = subprocess.run(
        [str(mmdebstrap), *argv(partial)], capture_output=True, text=True, check=False
    )
    if r.returncode != 0:
        raise PodmanError(f"mmdebstrap ({what}) failed: {r.stderr[-2000:]}")
    partial.replace(out)
    return out


def build_runner_rootfs(out: Path) -> Path:
    """The runner image's base: a Debian root file system with python3, as a tar, made
    from Debian's packages with mmdebstrap (no registry needed)."""
    return mmdebstrap_tar(
        lambda partial: [
            "--variant=essential",
            "--format=tar",
            "--include=python3,ca-certificates",
            "bookworm",
            str(partial),
        ],
        out,
        "runner",
    )


def run_podman(
    prefix: Sequence[str], args: Sequence[str], env: Mapping[str, str], timeout_s: float
) -> str:
    """`prefix + args` (prefix: podman and its storage options); its output, or a
    PodmanError naming the command and the tail of what it said."""
    r = subprocess.run(
        [*prefix, *args],
        capture_output=True,
        text=True,
        env=dict(env),
        timeout=timeout_s,
        check=False,
    )
    if r.returncode != 0:
        raise PodmanError(f"podman {' '.join(args)}: {(r.stdout + r.stderr)[-3000:]}")
    return r.stdout


def image_exists(podman: Callable[..., str], image: str) -> bool:
    try:
        podman("image", "exists", image, timeout_s=30)
    except PodmanError:
        return False
    return True


@dataclass
class LocalPodman(ManagedProcess):
    """`podman system service` on a socket under `base_dir`, storage of its own."""

    base_dir: Path
    name: str = "podman"
    log_file: Path = field(init=False)
    popen: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.base_dir = self.base_dir.resolve()
        self.log_file = self.base_dir / "podman.log"
        self.conf = self.base_dir / "containers.conf"
        # Podman refuses a run directory longer than 50 characters: a short one, named
        # after the state directory's path (so the same cluster finds it again).
        tag = hashlib.sha256(str(self.base_dir).encode()).hexdigest()[:12]
        self.run_dir = Path("/tmp") / f"rh-podman-{tag}"

    @property
    def socket(self) -> Path:
        return self.run_dir / "podman.sock"

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket}"

    def _argv(self, *args: str) -> list[str]:
        return [
            str(find_podman()),
            f"--root={self.base_dir / 'storage'}",
            f"--runroot={self.run_dir}",
            f"--tmpdir={self.run_dir / 'libpod'}",  # not /run/libpod, which all share
            "--runtime=runc",
            "--cgroup-manager=cgroupfs",
            *args,
        ]

    def _env(self) -> dict[str, str]:
        return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CONTAINERS_CONF": str(self.conf)}

    def podman(self, *args: str, timeout_s: float = 300) -> str:
        return run_podman(self._argv(), args, self._env(), timeout_s)

    def start(self, timeout_s: float = 30.0) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.run_dir.mkdir(exist_ok=True, mode=0o700)
        self.conf.write_text(CONTAINERS_CONF)
        self.socket.unlink(missing_ok=True)
        self.spawn(self._argv("system", "service", "--time=0", self.endpoint), env=self._env())

        def answers() -> bool:
            transport = httpx.HTTPTransport(uds=str(self.socket))
            try:
                with httpx.Client(transport=transport, timeout=2) as c:
                    return c.get("http://podman/_ping").status_code == 200
            except httpx.HTTPError:
                return False

        wait_ready(answers, timeout_s, "podman's API service", error=PodmanError, watch=[self])

    def build_runner_image(self, rootfs: Path, image: str = RUNNER_IMAGE) -> None:
        """The runner image: `rootfs` (`build_runner_rootfs`) imported as its base, then
        the Containerfile built on it (no step runs a container: COPY and settings)."""
        self.podman("import", str(rootfs), RUNNER_BASE_IMAGE)
        self.podman(
            "build",
            "--quiet",
            f"--build-arg=BASE={RUNNER_BASE_IMAGE}",
            f"--file={CONTAINERFILE}",
            f"--tag={image}",
            str(CONTAINERFILE.parent),
        )

    def has_image(self, image: str) -> bool:
        return image_exists(self.podman, image)

    def stop_containers(self) -> None:
        """Stop and remove every container it runs (the runners)."""
        if self.alive():
            with contextlib.suppress(PodmanError, subprocess.TimeoutExpired):
                self.podman("rm", "--all", "--force", "--time=5", timeout_s=60)

    def destroy(self) -> None:
        """Stop the service, every container it ran, and remove its storage."""
        self.stop_containers()
        self.stop()
        with contextlib.suppress(PodmanError, subprocess.TimeoutExpired):
            self.podman("system", "reset", "--force", timeout_s=60)
        shutil.rmtree(self.base_dir, ignore_errors=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)


if __name__ == "__main__":  # `make runner-image`
    import sys

    print(build_runner_rootfs(Path(sys.argv[1])))
