"""A container engine for the image tests and `make stack`, on machines with or without one.

- An engine that already answers (``DOCKER_HOST``, or the default socket) is used as it is.
- Otherwise Debian's ``dockerd`` (package ``docker.io``) is started privately: its own socket,
  ``--data-root`` and ``--exec-root`` under ``.cache/containers/`` in this clone.
- Base images that no registry can provide here are built from Debian packages:
  ``debootstrap --variant=minbase bookworm`` (Python 3.11), this machine's CA bundle copied
  in so pip works inside, imported under the name the Dockerfiles' ``ARG BASE_IMAGE``
  defaults to. Where a registry is reachable the same Dockerfiles build from the official image.

    python -m demo.container_engine start     # prints `export DOCKER_HOST=...`
    python -m demo.container_engine stop
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from demo.environment import REPO

CACHE = REPO / ".cache" / "containers"
BASE_IMAGE = "python:3.11-slim-bookworm"  # ARG BASE_IMAGE's default in docker/*/Dockerfile
DEBIAN_MIRROR = os.environ.get("ML_DEBIAN_MIRROR", "http://deb.debian.org/debian")


class EngineUnavailable(RuntimeError):
    """No container engine can run here; the message says what is missing."""


class Engine:
    def __init__(self, docker_host: str, started_pid: int | None = None):
        self.docker_host = docker_host
        self.started_pid = started_pid
        self.env = {**os.environ, "DOCKER_HOST": docker_host, "DOCKER_BUILDKIT": "0"}

    def docker(self, *args: str, check: bool = True, timeout: float = 1800, capture: bool = True,
               **kwargs) -> subprocess.CompletedProcess:
        proc = subprocess.run(["docker", *args], env=self.env, capture_output=capture, text=True, timeout=timeout,
                              **kwargs)
        if check and proc.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args[:4])} ... failed ({proc.returncode}):\n"
                               f"{(proc.stdout or '')[-3000:]}\n{(proc.stderr or '')[-3000:]}")
        return proc

    def has_image(self, name: str) -> bool:
        return self.docker("image", "inspect", name, check=False).returncode == 0

    def build(self, dockerfile: str, tag: str, *build_args: str, log: Path | None = None) -> float:
        """``docker build`` from the repository root (legacy builder); returns seconds taken."""
        started = time.monotonic()
        args = ["build", "-f", dockerfile, "-t", tag, *[a for b in build_args for a in ("--build-arg", b)], str(REPO)]
        proc = self.docker(*args, check=False)
        if log is not None:
            log.write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise RuntimeError(f"building {tag} from {dockerfile} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")
        return time.monotonic() - started

    def stop(self) -> None:
        """Stop a dockerd this module started (none: nothing to do)."""
        if self.started_pid:
            _stop_pid(self.started_pid)


def _answers(docker_host: str) -> bool:
    if not shutil.which("docker"):
        return False
    proc = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True,
                          env={**os.environ, "DOCKER_HOST": docker_host}, timeout=30)
    return proc.returncode == 0


def _stop_pid(pid: int, timeout: float = 30) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:  # a child of this process stays a zombie until waited for: reap it, or this waits the whole timeout
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:  # not our child, or reaped already
            pass
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


def private_socket() -> str:
    return f"unix://{CACHE / 'docker.sock'}"


def engine(start: bool = True) -> Engine:
    """An engine that answers: the configured one, a private dockerd already running, or a new one."""
    configured = os.environ.get("DOCKER_HOST")
    if configured and _answers(configured):
        return Engine(configured)
    if not configured and Path("/var/run/docker.sock").exists() and _answers("unix:///var/run/docker.sock"):
        return Engine("unix:///var/run/docker.sock")
    pid_file = CACHE / "dockerd.pid"
    if _answers(private_socket()):  # started earlier (make stack, another session): not ours to stop
        return Engine(private_socket())
    if not start:
        raise EngineUnavailable("no container engine answers")
    missing = [tool for tool in ("dockerd", "docker", "containerd", "runc") if not shutil.which(tool)]
    if missing:
        raise EngineUnavailable(
            f"no container engine answers and {missing} are not installed: on Debian/Ubuntu run "
            f"`apt-get install docker.io` (or `make container-tools`), or point DOCKER_HOST at an engine")
    if os.geteuid() != 0:
        raise EngineUnavailable("no container engine answers, and starting dockerd needs root: run the tests as root "
                                "or point DOCKER_HOST at a running engine")
    CACHE.mkdir(parents=True, exist_ok=True)
    log = open(CACHE / "dockerd.log", "ab")
    proc = subprocess.Popen(
        ["dockerd", "--host", private_socket(), "--data-root", str(CACHE / "data"),
         "--exec-root", str(Path(tempfile.gettempdir()) / f"ml-dockerd-{os.getuid()}"),
         "--pidfile", str(CACHE / "dockerd-own.pid")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    pid_file.write_text(str(proc.pid))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EngineUnavailable(f"dockerd exited with {proc.returncode} at start; see {CACHE / 'dockerd.log'}")
        if _answers(private_socket()):
            return Engine(private_socket(), proc.pid)
        time.sleep(0.5)
    _stop_pid(proc.pid)
    raise EngineUnavailable(f"dockerd did not answer within 60 s; see {CACHE / 'dockerd.log'}")


def ensure_base_image(eng: Engine, name: str = BASE_IMAGE) -> str:
    """``name`` exists in the engine: pulled where a registry answers, else built from Debian packages."""
    if eng.has_image(name):
        return "present"
    if eng.docker("pull", name, check=False, timeout=300).returncode == 0:
        return "pulled"
    if not shutil.which("debootstrap"):
        raise EngineUnavailable(f"base image {name} cannot be pulled and debootstrap is missing: "
                                f"`apt-get install debootstrap` (or `make container-tools`)")
    rootfs = CACHE / "rootfs-bookworm"
    if not (rootfs / "usr" / "bin" / "python3").exists():
        shutil.rmtree(rootfs, ignore_errors=True)
        proc = subprocess.run(["debootstrap", "--variant=minbase", "--include=python3,python3-venv,python3-pip,"
                               "ca-certificates,procps", "bookworm", str(rootfs), DEBIAN_MIRROR],
                              capture_output=True, text=True, timeout=1200)
        if proc.returncode != 0:
            raise EngineUnavailable(f"debootstrap failed ({proc.returncode}): {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    (rootfs / "usr/lib/python3.11/EXTERNALLY-MANAGED").unlink(missing_ok=True)  # pip installs system-wide, as in python:*
    bundle = Path(os.environ.get("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt"))
    if bundle.exists():  # this machine's CA bundle, so pip inside reaches the package index the way the host does
        shutil.copyfile(bundle, rootfs / "etc/ssl/certs/ca-certificates.crt")
    (rootfs / "etc/pip.conf").write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")
    python = rootfs / "usr/local/bin/python"
    if not python.is_symlink():
        python.symlink_to("/usr/bin/python3")
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for entry in (rootfs / cache).glob("*"):
            if entry.is_file():
                entry.unlink()
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    proc = subprocess.run(["docker", "import", "-c", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                           "-c", "ENV LANG=C.UTF-8", "-c", 'CMD ["python3"]', "-", name],
                          stdin=tar.stdout, env=eng.env, capture_output=True, text=True, timeout=600)
    tar.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"docker import of {name} failed: {proc.stderr}")
    return "built from Debian packages"


PODMAN_RUNROOT_MAX = 50  # podman refuses a longer --runroot ("the specified runroot is longer than 50 characters")


def short_runroot(storage: Path) -> Path:
    """Podman's run root for ``storage``, short wherever the clone lives: a folder of the system's
    temporary (or runtime) directory named from a hash of the storage path, so each clone keeps its
    own, and the same clone always finds it again. (Under the clone's ``.cache/`` it broke as soon
    as the clone's path was longer than about 21 characters.)"""
    import hashlib

    name = f"mlpod-{os.getuid()}-{hashlib.sha256(str(storage.resolve()).encode()).hexdigest()[:12]}"
    for base in (os.environ.get("XDG_RUNTIME_DIR"), tempfile.gettempdir(), "/tmp"):
        if base and len(str(Path(base) / name)) <= PODMAN_RUNROOT_MAX:
            return Path(base) / name
    raise EngineUnavailable(f"no temporary directory gives podman a run root of at most {PODMAN_RUNROOT_MAX} "
                            f"characters (TMPDIR={tempfile.gettempdir()!r}): set TMPDIR to a short path such as /tmp")


class Podman:
    """Podman with its own configuration and storage in this clone: ``podman kube play`` is the
    one real consumer of Kubernetes pod YAML on machines without a cluster."""

    CONF = """[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""

    def __init__(self, cache: Path = CACHE):
        missing = [tool for tool in ("podman", "runc", "catatonit") if not shutil.which(tool)
                   and not Path(f"/usr/libexec/podman/{tool}").exists()]
        if missing:
            raise EngineUnavailable(f"{missing} not installed: `apt-get install podman runc catatonit` "
                                    f"(or `make container-tools`)")
        self.dir = cache / "podman"
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "containers.conf").write_text(self.CONF)
        self.runroot = short_runroot(self.dir)
        self.runroot.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.env = {**os.environ, "CONTAINERS_CONF": str(self.dir / "containers.conf")}
        self.argv = ["podman", "--root", str(self.dir / "root"), "--runroot", str(self.runroot),
                     "--storage-driver", "overlay"]

    def run(self, *args: str, check: bool = True, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
        proc = subprocess.run([*self.argv, *args], env=self.env, capture_output=True, text=True, timeout=timeout,
                              **kwargs)
        if check and proc.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args[:3])} failed ({proc.returncode}): {proc.stderr[-3000:]}")
        return proc

    def load_from(self, eng: Engine, image: str, *also_as: str) -> None:
        """Copy ``image`` from the Docker engine (``docker save | podman load``), tagged as given."""
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE, env=eng.env)
        try:
            proc = subprocess.run([*self.argv, "load"], stdin=save.stdout, env=self.env, capture_output=True,
                                  text=True, timeout=600)
        finally:
            save.stdout.close()  # if podman stopped reading, docker save gets SIGPIPE instead of blocking
            save.wait(timeout=60)
        if proc.returncode != 0 or save.returncode != 0:
            raise RuntimeError(f"docker save {image} | podman load failed: {proc.stderr[-2000:]}")
        for name in also_as:
            self.run("tag", f"localhost/{image}" if "/" not in image else image, name)


def main() -> int:
    action = sys.argv[1] if len(sys.argv) > 1 else "start"
    if action == "stop":
        pid_file = CACHE / "dockerd.pid"
        if pid_file.exists():
            _stop_pid(int(pid_file.read_text()))
            pid_file.unlink()
            print("stopped the private dockerd")
        return 0
    try:
        eng = engine()
        print(f"# base image {BASE_IMAGE}: {ensure_base_image(eng)}", file=sys.stderr)
    except EngineUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"export DOCKER_HOST={eng.docker_host} DOCKER_BUILDKIT=0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
