"""The Python packages of a SageMaker job: the versions of the repository's ``uv.lock``.

A job without titan in its image pip-installs, at start on every host, the
code channel's ``requirements.txt``: titan's own wheels (repacked from this
environment, see :mod:`titan.backends.sagemaker.bundle`) and every other
package at the version the lock holds, with the lock's hashes::

    uv export --frozen --no-dev --no-emit-workspace --no-editable --format requirements-txt

(written at launch, from the lock of the workspace titan runs from). The
lock is universal: each line carries the environment markers uv resolved
it for, and pip in the container keeps the lines whose markers match the
image (Linux, x86_64, the image's Python). The lock's torch is PyPI's; on
Linux that is a CUDA build whose CUDA libraries are ``nvidia-*`` wheels
(``sys_platform == 'linux'`` markers), so the job runs the lock's torch with
the CUDA it was built for, whatever the image's own CUDA. A lock whose torch
for Linux is a CPU build (``+cpu``) cannot train on the job's GPUs and is
refused. A lock with packages from another index (a PyTorch wheel index)
gets its index URLs in the file (``--emit-index-url``); a PyPI-only lock
does not, so an image's or a VPC's pip configuration (a mirror) still applies.

Without ``uv`` or the lock (titan installed from a wheel), the versions
installed here are pinned instead (importlib.metadata, no hashes), and a
note before launch says so.

Torch-free and SDK-free: ``layout()`` uses it for its notes.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata as md
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from titan.core.errors import ConfigError

EXPORT = (
    "export",
    "--frozen",
    "--no-dev",
    "--no-emit-workspace",
    "--no-editable",
    "--format",
    "requirements-txt",
    "--no-header",
)
"""``uv export`` arguments (checked against uv 0.13): the lock as it is (no re-resolution),
without the dev group (tests, the example plugins, the SageMaker SDK), without the
workspace's own packages (titan's wheels travel beside it), with hashes."""

PYPI = "https://pypi.org/simple"
COMPARED = ("torch", "torchao", "torchdata")
"""The packages whose versions the notes before launch name."""

_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]*?))?\s*\\?\s*$")
_WORKSPACE_MEMBER = re.compile(
    r'^name = "titan-core"\nversion = "[^"]*"\nsource = \{ (?:editable|virtual|directory) = ',
    re.M,
)
_REGISTRY = re.compile(r'source = \{ registry = "([^"]+)" \}')


@dataclass(frozen=True)
class Requirements:
    """The job's requirement lines other than titan's wheels, and where they come from."""

    text: str
    """Requirement lines (``name==version ; marker`` and their ``--hash`` lines)."""
    source: str
    """``uv.lock`` (a path) or ``installed`` (this environment's versions)."""
    pins: dict[str, str] = field(default_factory=dict)
    """name -> version that pip installs in the container (its markers evaluated)."""
    hashes: bool = True
    """Whether the lines carry hashes (then titan's wheel lines need theirs: pip's
    hash-checking mode covers every line of the file)."""
    note: str = ""
    """Said before launch when the versions are not the lock's."""


def container_environment(py_version: str) -> dict[str, str]:
    """PEP 508 marker values of the AWS image (Linux, x86_64, CPython ``py313`` -> 3.13)."""
    digits = py_version.removeprefix("py")
    version = f"{digits[0]}.{digits[1:]}" if len(digits) > 1 else digits
    return {
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "python_version": version,
        "python_full_version": f"{version}.0",
        "extra": "",
    }


def _marker_matches(marker: str | None, env: dict[str, str]) -> bool:
    if not marker:
        return True
    try:
        from packaging.markers import Marker
    except ImportError:  # (packaging comes with matplotlib, a titan-core dependency)
        return True
    return Marker(marker).evaluate(env)


def container_pins(text: str, env: dict[str, str]) -> dict[str, str]:
    """name -> version of each requirement line of ``text`` whose markers match ``env``."""
    pins: dict[str, str] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if m and _marker_matches(m.group(3), env):
            pins[_normal(m.group(1))] = m.group(2)
    return pins


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def find_lock() -> Path | None:
    """The ``uv.lock`` of the workspace titan runs from (titan-core one of its members)."""
    import titan.core

    here = Path(titan.core.__file__).resolve().parent
    for folder in here.parents:
        lock = folder / "uv.lock"
        if lock.is_file() and (folder / "pyproject.toml").is_file():
            try:
                text = lock.read_text()
            except OSError:
                return None
            return lock if _WORKSPACE_MEMBER.search(text) else None
    return None


def uv_binary() -> str | None:
    """The ``uv`` that runs titan (``uv run`` sets ``UV``), else the one on PATH."""
    named = os.environ.get("UV")
    if named and Path(named).is_file() and os.access(named, os.X_OK):
        return named
    return shutil.which("uv")


def job_requirements(py_version: str, active: set[str]) -> Requirements:
    """The lock's requirements for the image (``uv export``), else this environment's versions
    of what the titan distributions of a job with plugins ``active`` need."""
    lock = find_lock()
    uv = uv_binary()
    if lock is None or uv is None:
        why = "no uv.lock of titan's workspace here" if lock is None else "no `uv` on PATH"
        return installed_requirements(py_version, why, active)
    result = _exported(str(lock), _mtime(lock), uv, py_version)
    if isinstance(result, str):
        return installed_requirements(py_version, result, active)
    return result


def _mtime(path: Path) -> float:
    return path.stat().st_mtime


@functools.lru_cache(maxsize=4)
def _exported(lock: str, mtime: float, uv: str, py_version: str) -> Requirements | str:
    """``uv export`` of ``lock`` (once per process and lock state: layout() and launch share it);
    why not, when it could not run."""
    args = [uv, *EXPORT]
    registries = set(_REGISTRY.findall(Path(lock).read_text()))
    if registries - {PYPI}:
        args.append("--emit-index-url")  # e.g. a PyTorch wheel index: pip must know it too
    # (the user's UV_NO_HASHES or UV_LOCKED would change or stop the export)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("VIRTUAL_ENV", "UV_NO_HASHES", "UV_LOCKED", "UV_NO_HEADER")
    }
    try:
        proc = subprocess.run(
            args, cwd=Path(lock).parent, capture_output=True, text=True, timeout=120, env=env
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`uv export` did not run ({exc})"
    if proc.returncode != 0:
        first = next((ln for ln in proc.stderr.splitlines() if ln.strip()), "no message")
        return f"`uv export` failed ({first.strip()})"
    pins = container_pins(proc.stdout, container_environment(py_version))
    torch = pins.get("torch", "")
    if "+cpu" in torch:
        raise ConfigError(
            f"the lock's torch for Linux is a CPU build ({torch}) and a SageMaker job trains on "
            "GPUs; lock PyPI's torch (its Linux wheels are CUDA builds) or a CUDA build for "
            "sys_platform == 'linux', or pass --sagemaker.image_uri with an image that has "
            "titan and a CUDA torch (docs/sagemaker.md)"
        )
    return Requirements(text=proc.stdout, source=lock, pins=pins, hashes=True)


def installed_requirements(py_version: str, why: str, active: set[str]) -> Requirements:
    """What the job's titan distributions need, at the versions installed here (no hashes)."""
    from titan.backends.sagemaker.bundle import titan_distributions

    env = container_environment(py_version)
    dists = titan_distributions(active)
    own = {_normal(d.metadata["Name"]) for d in dists}  # shipped as wheels
    pins: dict[str, str] = {}
    local: list[str] = []
    todo = [(req, "") for d in dists for req in (d.requires or [])]
    while todo:
        text, extra = todo.pop()
        parsed = _parse_requirement(text)
        if parsed is None:
            continue
        name, extras, marker = parsed
        if name in own or name in pins or not _marker_matches(marker, {**env, "extra": extra}):
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue  # not installed here (another platform's dependency): pip resolves it
        version = dist.version
        if "+" in version:
            local.append(f"{name} {version}")
            version = version.split("+", 1)[0]  # a local build: the index has the public one
        pins[name] = version
        todo += [(req, e) for req in (dist.requires or []) for e in ("", *extras)]
    text = "".join(f"{n}=={v}\n" for n, v in sorted(pins.items()))
    named = ", ".join(f"{n} {pins[n]}" for n in COMPARED if n in pins)
    note = (
        f"{why}: the job pip-installs the versions installed in this environment ({named}, "
        "pinned without hashes) instead of a lock's"
    )
    if local:
        note += f"; local builds pinned by their public version: {', '.join(local)}"
    return Requirements(text=text, source="installed", pins=pins, hashes=False, note=note)


def _parse_requirement(text: str) -> tuple[str, tuple[str, ...], str | None] | None:
    try:
        from packaging.requirements import InvalidRequirement, Requirement
    except ImportError:
        name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", text)
        marker = text.partition(";")[2].strip() or None
        return (_normal(name.group(1)), (), marker) if name else None
    try:
        req = Requirement(text)
    except InvalidRequirement:
        return None
    return _normal(req.name), tuple(sorted(req.extras)), str(req.marker) if req.marker else None


def requirements_file(reqs: Requirements, wheels: list[Path]) -> str:
    """``requirements.txt`` of the code channel (or an image): the pins, then titan's wheels."""
    head = (
        "# Written by titan: the versions of the repository's uv.lock (uv export --frozen\n"
        "# --no-dev --no-emit-workspace --no-editable), then titan's own wheels.\n"
        if reqs.source != "installed"
        else "# Written by titan: the versions installed where the job was launched (no uv.lock),\n"
        "# then titan's own wheels.\n"
    )
    lines = [head, reqs.text.rstrip("\n") + "\n" if reqs.text.strip() else ""]
    for wheel in wheels:
        line = f"./{wheel.parent.name}/{wheel.name}"
        if reqs.hashes:  # pip's hash-checking mode wants a hash on every line
            line += f" --hash=sha256:{hashlib.sha256(wheel.read_bytes()).hexdigest()}"
        lines.append(line + "\n")
    return "".join(lines)


def version_notes(sec: object, reqs: Requirements) -> list[str]:
    """Before launch, for a job that installs titan at start: the image's torch against the pins."""
    notes: list[str] = []
    if reqs.note:
        notes.append(reqs.note)
    torch = reqs.pins.get("torch")
    if torch is None:
        return notes
    if getattr(sec, "image_uri", ""):
        return notes  # an image of the user's: titan cannot see its torch
    installs = ", ".join(f"{n} {reqs.pins[n]}" for n in COMPARED if n in reqs.pins)
    image = str(getattr(sec, "pytorch_version", ""))
    if _major_minor(image) != _major_minor(torch):
        where = "the lock's" if reqs.source != "installed" else "this environment's"
        notes.append(
            f"the default image (AWS PyTorch {image}, --sagemaker.pytorch_version) has torch "
            f"{image}, not {where} {torch}: every host pip-installs {installs} and their CUDA "
            "libraries (several GB from the package index) over it at start; "
            "`titan sagemaker dockerfile` builds an image with them inside (docs/sagemaker.md)"
        )
    return notes


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split("+")[0].split(".")[:2])


def check_pinned(dists: list[md.Distribution], reqs: Requirements, py_version: str) -> None:
    """Refuse wheels that need a package the pinned file lacks: pip's hash-checking mode
    would stop the job's install at start (a plugin from outside the lock, say)."""
    if not reqs.hashes:
        return
    env = container_environment(py_version)
    shipped = {_normal(d.metadata["Name"]) for d in dists}
    for dist in dists:
        for text in dist.requires or []:
            parsed = _parse_requirement(text)
            if parsed is None:
                continue
            name, _, marker = parsed
            if name in shipped or name in reqs.pins or not _marker_matches(marker, env):
                continue
            raise ConfigError(
                f"{dist.metadata['Name']} (a titan distribution this job ships) needs {name}, "
                "which uv.lock does not hold for the job's image (pip would refuse the job's "
                f"install at start); add {dist.metadata['Name']} to the workspace's "
                "dependencies and run `uv lock`, or pass --sagemaker.image_uri with an image "
                "that has it"
            )
