"""The deployment files agree with the code they deploy.

There is no Docker engine to run docker-compose.yml or the Dockerfile here, so these tests read
them: the services and their start order, the CLI commands they run (checked against the click
group), the environment they read (checked against `Settings` and `.env.example`), and the image.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import yaml
from prometheus_client import REGISTRY

import workers.metrics  # noqa: F401 - registers the worker metrics in REGISTRY
from jobs.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = ROOT / "pyproject.toml"
README = ROOT / "README.md"

EXPECTED_SERVICES = {
    "redis",
    "postgres",
    "seaweedfs",
    "migrate",
    "api",
    "worker",
    "beat",
    "emulator",
    "prometheus",
    "grafana",
}
# Services behind a compose profile, and which (nothing else is left out of a plain `up`).
PROFILED = {"emulator": ["emulator"], "prometheus": ["monitoring"], "grafana": ["monitoring"]}
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus.yml"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
APP_SERVERS = ("api", "worker", "beat")
ENV_PREFIX = "SPEECHBATCH_"
# Variables that only configure the compose-managed containers themselves, never speechbatch.
COMPOSE_INTERNAL_PREFIXES = ("POSTGRES_",)
# `${VAR}`, `${VAR:-default}` and `$VAR`, but not the `$$` escape.
INTERPOLATION = re.compile(r"(?<!\$)\$\{?([A-Za-z_][A-Za-z0-9_]*)")
ENV_LINE = re.compile(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$")
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


# --- readers ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def app_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Services that run the speechbatch image (built from this repository's Dockerfile)."""
    return {
        name: svc
        for name, svc in services.items()
        if "build" in svc or str(svc.get("image", "")).startswith("speechbatch")
    }


def argv(value: str | list[str] | None) -> list[str]:
    """A compose `command`/`entrypoint` as an argument list (strings are split like a shell)."""
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def env_example() -> dict[str, tuple[str, bool]]:
    """Variable name -> (value, active) for `NAME=value` and commented `# NAME=value` lines."""
    listed: dict[str, tuple[str, bool]] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = ENV_LINE.match(line.strip())
        if match:
            active = match.group(1) is None
            if active or match.group(2) not in listed:
                listed[match.group(2)] = (match.group(3), active)
    return listed


def settings_env_names() -> dict[str, str]:
    """Environment variable -> `Settings` field, as pydantic-settings reads them."""
    names = {}
    for field, info in Settings.model_fields.items():
        alias = info.validation_alias
        names[alias if isinstance(alias, str) else ENV_PREFIX + field.upper()] = field
    return names


def strings_in(node: Any) -> Iterator[str]:
    """Every string (keys and values) anywhere in a parsed YAML node."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings_in(key)
            yield from strings_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings_in(value)


def environment_keys(svc: dict[str, Any]) -> set[str]:
    env = svc.get("environment") or {}
    if isinstance(env, dict):
        return set(env)
    return {item.split("=", 1)[0] for item in env}


def depends_on(svc: dict[str, Any]) -> dict[str, Any]:
    deps = svc.get("depends_on") or {}
    # The list form has no condition; keep it visible to the tests as such.
    return {name: {} for name in deps} if isinstance(deps, list) else dict(deps)


def has_healthcheck(svc: dict[str, Any]) -> bool:
    check = svc.get("healthcheck") or {}
    test = check.get("test")
    return bool(test) and not check.get("disable") and argv(test)[:1] != ["NONE"]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    joined: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    pairs = []
    for line in joined:
        instruction, _, args = line.partition(" ")
        pairs.append((instruction.upper(), args.strip()))
    return pairs


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (name, _) in enumerate(instructions) if name == "FROM")
    return instructions[last_from:]


def pyproject() -> dict[str, Any]:
    return tomllib.loads(PYPROJECT.read_text())


def cli_problems(args: list[str]) -> list[str]:
    """Why `speechbatch ARGS` would be rejected by the click group, or [] when it parses."""
    from speechbatch.cli import main

    command: click.Command = main
    path = ["speechbatch"]
    rest = list(args)
    while isinstance(command, click.Group):
        if not rest or rest[0] not in command.commands:
            known = ", ".join(sorted(command.commands))
            return [f"{' '.join(path)}: {rest[:1]} is not one of its commands ({known})"]
        path.append(rest[0])
        command = command.commands[rest.pop(0)]
    options = {
        opt
        for param in command.params
        if isinstance(param, click.Option)
        for opt in (*param.opts, *param.secondary_opts)
    }
    flags = [arg.split("=", 1)[0] for arg in rest if arg.startswith("--")]
    problems = [f"{' '.join(path)}: no option {flag}" for flag in flags if flag not in options]
    if not problems:
        try:
            # Parses and type-checks the values without running the command.
            with command.make_context(" ".join(path), list(rest)):
                pass
        except click.ClickException as exc:
            problems.append(f"{' '.join(path)}: {exc.format_message()}")
    return problems


# --- compose: services and commands -----------------------------------------------------------


def test_compose_has_exactly_the_production_services(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    """Compose defines exactly the services of design §3 plus issue 13's monitoring pair, with
    no obsolete `version:` key."""
    assert "version" not in compose
    assert set(services) == EXPECTED_SERVICES


def test_only_the_emulator_and_monitoring_are_behind_profiles(services: dict[str, Any]) -> None:
    """A plain `docker compose up` starts everything but the emulator and the monitoring pair,
    which have the `emulator` and `monitoring` profiles."""
    profiled = {name: svc["profiles"] for name, svc in services.items() if svc.get("profiles")}
    assert profiled == PROFILED


def test_shared_app_block_is_a_yaml_anchor() -> None:
    """The speechbatch services share one `x-speechbatch` anchor instead of repeating config."""
    text = COMPOSE_FILE.read_text()
    assert re.search(r"^x-speechbatch:\s*&\S+", text, re.MULTILINE)
    compose_data = yaml.safe_load(text)
    block = compose_data["x-speechbatch"]
    for name, svc in app_services(compose_data["services"]).items():
        assert svc["image"] == block["image"], name
        assert svc["env_file"] == block["env_file"], name
        assert svc["environment"] == block["environment"], name


def test_app_services_run_registered_cli_commands(services: dict[str, Any]) -> None:
    """Each speechbatch container runs a `speechbatch.cli.main` command with options it has."""
    checked = set()
    problems = []
    for name, svc in app_services(services).items():
        checked.add(name)
        problems += [f"{name}: {p}" for p in cli_problems(argv(svc.get("command")))]
    assert problems == []
    assert checked == {"migrate", "api", "worker", "beat", "emulator"}


def test_dockerfile_default_command_is_a_cli_command() -> None:
    """The image's default CMD (what `docker run speechbatch` does) is a valid CLI invocation."""
    cmd = [args for name, args in final_stage() if name == "CMD"]
    assert cmd, "Dockerfile has no CMD"
    assert cli_problems(json.loads(cmd[-1])) == []


def test_cli_checker_rejects_unknown_commands_and_options() -> None:
    """The CLI check itself fails on a misspelt command, a misspelt option and a bad value."""
    assert cli_problems(["wroker"])
    assert cli_problems(["worker", "--concurency", "16"])
    assert cli_problems(["worker", "--concurrency", "many"])
    assert cli_problems(["worker", "--concurrency", "16"]) == []


def test_app_servers_run_the_documented_roles(services: dict[str, Any]) -> None:
    """api listens on 0.0.0.0:8000 (published), the worker derives its threads from the provider
    limits (no --concurrency to fall out of step with them), migrate migrates."""
    assert argv(services["api"]["command"]) == ["api", "--host", "0.0.0.0", "--port", "8000"]
    assert "8000:8000" in [str(p) for p in services["api"]["ports"]]
    assert argv(services["worker"]["command"]) == ["worker"]
    assert argv(services["beat"]["command"])[:1] == ["beat"]
    assert argv(services["migrate"]["command"]) == ["migrate"]
    emulator = argv(services["emulator"]["command"])
    assert emulator == ["emulator", "--host", "0.0.0.0", "--port", "9100"]


def test_redis_is_configured_as_a_broker(services: dict[str, Any]) -> None:
    """Redis never evicts queued messages (noeviction) and keeps them across restarts (AOF)."""
    command = " ".join(argv(services["redis"]["command"]))
    assert "--maxmemory-policy noeviction" in command
    assert "--appendonly yes" in command


# --- compose: start order and health ----------------------------------------------------------


def test_every_service_is_health_checked_or_an_awaited_one_shot(services: dict[str, Any]) -> None:
    """Each service has a health check, or is a one-shot that others await to complete."""
    awaited = {
        target
        for svc in services.values()
        for target, spec in depends_on(svc).items()
        if spec.get("condition") == "service_completed_successfully"
    }
    for name, svc in services.items():
        assert has_healthcheck(svc) or name in awaited, f"{name}: no healthcheck, not awaited"
    for name in awaited:
        # A restart policy would re-run a finished one-shot and it would never "complete".
        assert services[name].get("restart", "no") == "no", name
        assert not has_healthcheck(services[name]), name


def test_every_dependency_has_a_condition_its_target_can_meet(services: dict[str, Any]) -> None:
    """Each depends_on entry names an existing, unprofiled service and a condition it can meet."""
    for name, svc in services.items():
        for target, spec in depends_on(svc).items():
            where = f"{name} -> {target}"
            assert target in services, where
            assert spec.get("condition") in CONDITIONS, f"{where}: no condition"
            if spec["condition"] == "service_healthy":
                assert has_healthcheck(services[target]), f"{where}: target has no healthcheck"
            if services[target].get("profiles"):
                assert services[target]["profiles"] == svc.get("profiles"), where


def test_app_servers_wait_for_infrastructure_schema_and_bucket(services: dict[str, Any]) -> None:
    """api, worker and beat start only after the stores are healthy and `migrate` (schema and
    bucket) succeeded."""
    wanted = {
        "redis": "service_healthy",
        "postgres": "service_healthy",
        "seaweedfs": "service_healthy",
        "migrate": "service_completed_successfully",
    }
    for name in APP_SERVERS:
        got = {target: spec.get("condition") for target, spec in depends_on(services[name]).items()}
        assert got == wanted, name
    assert depends_on(services["migrate"]) == {
        "postgres": {"condition": "service_healthy"},
        "seaweedfs": {"condition": "service_healthy"},
    }


def test_api_healthcheck_probes_healthz(services: dict[str, Any]) -> None:
    """The api's health check asks its own GET /healthz, which covers DB, broker and storage."""
    test = " ".join(argv(services["api"]["healthcheck"]["test"]))
    assert "127.0.0.1:8000/healthz" in test
    assert "/_emulator/health" in " ".join(argv(services["emulator"]["healthcheck"]["test"]))


def test_in_network_urls_point_at_the_compose_services(services: dict[str, Any]) -> None:
    """The shared URLs name the compose services, their ports and the postgres credentials."""
    env = services["api"]["environment"]
    pg = services["postgres"]["environment"]
    db = urlsplit(env["SPEECHBATCH_DATABASE_URL"])
    assert db.scheme == "postgresql+psycopg"
    assert (db.hostname, db.port) == ("postgres", 5432)
    assert (db.username, db.password) == (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"])
    assert db.path.lstrip("/") == pg["POSTGRES_DB"]
    broker = urlsplit(env["SPEECHBATCH_BROKER_URL"])
    assert (broker.scheme, broker.hostname, broker.port) == ("redis", "redis", 6379)
    s3 = urlsplit(env["SPEECHBATCH_S3_ENDPOINT_URL"])
    assert s3.hostname == "seaweedfs"
    assert f"-s3.port={s3.port}" in argv(services["seaweedfs"]["command"])
    assert urlsplit(env["SPEECHBATCH_STORAGE_URL"]).scheme == "s3"


def test_presigned_urls_name_seaweedfs_published_port(services: dict[str, Any]) -> None:
    """Download URLs are signed for the host's address of SeaweedFS (its published port), which
    a .env value may override; the containers' own S3 endpoint stays in-network."""
    env = services["api"]["environment"]
    public = re.fullmatch(
        r"\$\{SPEECHBATCH_S3_PUBLIC_ENDPOINT_URL:-(\S+)\}",
        env["SPEECHBATCH_S3_PUBLIC_ENDPOINT_URL"],
    )
    assert public, "a .env value must be able to override the public endpoint"
    url = urlsplit(public.group(1))
    inside = urlsplit(env["SPEECHBATCH_S3_ENDPOINT_URL"])
    published = [str(p).split(":") for p in services["seaweedfs"]["ports"]]
    assert [url.hostname, str(url.port), str(inside.port)] in (
        [host.replace("127.0.0.1", "localhost"), host_port, port]
        for host, host_port, port in published
    )


# --- README: the production shape as documented ----------------------------------------------


def readme_section(title: str) -> str:
    """The text of the README's `## title` section."""
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def readme_commands(title: str) -> list[list[str]]:
    """Each line of the ```sh blocks of a README section, split like a shell, comments dropped."""
    blocks = re.findall(r"```sh\n(.*?)```", readme_section(title), re.DOTALL)
    lines = (shlex.split(line, comments=True) for block in blocks for line in block.splitlines())
    return [line for line in lines if line]


def test_readme_emulator_flow_matches_compose(services: dict[str, Any]) -> None:
    """The README's emulator steps set real settings to the emulator service's address, port
    and SLNG path, and its `up` names the profile and no service, so the worker is recreated."""
    from emulator.slng import PREFIX

    commands = readme_commands("Running the production shape")
    env = dict(cmd[0].split("=", 1) for cmd in commands if len(cmd) == 1 and "=" in cmd[0])
    assert {"SLNG_API_KEY", "SPEECHBATCH_SLNG_BASE_URL"} <= set(env) <= set(settings_env_names())
    assert env["SLNG_API_KEY"], "a provider without a key is not configured"
    base = urlsplit(env["SPEECHBATCH_SLNG_BASE_URL"])
    assert base.hostname in services
    emulator = services[base.hostname]
    command = argv(emulator["command"])
    assert command[0] == "emulator"
    assert (str(base.port), base.path) == (command[command.index("--port") + 1], PREFIX)
    for text in (COMPOSE_FILE.read_text(), ENV_EXAMPLE.read_text()):
        assert env["SPEECHBATCH_SLNG_BASE_URL"] in text  # their comments say the same
    ups = [cmd for cmd in commands if cmd[:2] == ["docker", "compose"] and "--profile" in cmd]
    assert ups
    for up in ups:
        assert up[up.index("--profile") + 1] in emulator["profiles"]
        rest = up[up.index("up") + 1 :]
        # Naming services would leave the others on their old environment.
        assert [arg for arg in rest if not arg.startswith("-")] == [], up


def test_readme_documents_this_issues_settings() -> None:
    """The settings added for issue 8 are in the README's configuration table."""
    table = readme_section("Configuration")
    for name in (
        "SPEECHBATCH_S3_PUBLIC_ENDPOINT_URL",
        "SPEECHBATCH_LOG_FORMAT",
        "SPEECHBATCH_WORKER_SELF_CHECK_SECONDS",
    ):
        assert name in settings_env_names()
        assert f"| `{name}` |" in table, name


# --- environment: compose, .env.example and Settings ------------------------------------------


def test_compose_variables_are_documented_in_env_example(services: dict[str, Any]) -> None:
    """Every variable the app services set or compose interpolates is in .env.example."""
    listed = set(env_example())
    referenced: set[str] = set()
    for svc in app_services(services).values():
        referenced |= environment_keys(svc)
    for svc in services.values():
        for text in strings_in(svc):
            referenced |= set(INTERPOLATION.findall(text))
    missing = {
        name for name in referenced - listed if not name.startswith(COMPOSE_INTERNAL_PREFIXES)
    }
    assert missing == set()


def test_env_example_speechbatch_variables_are_settings_fields() -> None:
    """Each SPEECHBATCH_* name in .env.example is a real `Settings` field, so none is a typo."""
    fields = {f for f, info in Settings.model_fields.items() if info.validation_alias is None}
    unknown = {
        name
        for name in env_example()
        if name.startswith(ENV_PREFIX) and name[len(ENV_PREFIX) :].lower() not in fields
    }
    assert unknown == set()


def test_every_settings_variable_is_in_env_example() -> None:
    """Every variable `Settings` reads, provider keys (aliases) included, is in .env.example."""
    listed = set(env_example())
    names = settings_env_names()
    aliases = {n for n, f in names.items() if Settings.model_fields[f].validation_alias}
    assert aliases >= {
        "SLNG_API_KEY",
        "SMALLEST_API_KEY",
        "DEEPGRAM_API_KEY",
        "OPENAI_API_KEY",
        "ELEVENLABS_API_KEY",
    }
    assert aliases - listed == set()
    assert set(names) - listed == set()
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"} <= listed


def test_env_example_values_are_the_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading .env.example's active lines gives the `Settings` defaults and no provider key."""
    names = settings_env_names()
    for name in names:
        monkeypatch.delenv(name, raising=False)
    active = {name: value for name, (value, on) in env_example().items() if on}
    for name, value in active.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    for name in active.keys() & names.keys():
        field = names[name]
        if Settings.model_fields[field].validation_alias:
            provider = field.removesuffix("_api_key")
            assert active[name] == "", f"{name} must be an empty placeholder"
            assert settings.provider_api_key(provider) is None, name
        else:
            assert getattr(settings, field) == Settings.model_fields[field].default, name


def test_env_example_gives_each_variable_a_comment() -> None:
    """Each variable line in .env.example is directly below a one-line comment saying what it is."""
    lines = ENV_EXAMPLE.read_text().splitlines()
    for number, line in enumerate(lines):
        match = ENV_LINE.match(line.strip())
        if match and match.group(1) is None:
            above = lines[number - 1].strip() if number else ""
            assert above.startswith("#"), match.group(2)
            assert not ENV_LINE.match(above), match.group(2)


# --- the image ----------------------------------------------------------------------------------


def test_dockerfile_installs_espeak_ng_and_runs_the_console_script() -> None:
    """The runtime image has espeak-ng, and its ENTRYPOINT is pyproject's `speechbatch` script."""
    stage = final_stage()
    assert stage[0][1].split()[0] == "python:3.11-slim"
    installs = [args for name, args in stage if name == "RUN" and "apt-get install" in args]
    packages = {word for args in installs for word in args.split()}
    assert {"espeak-ng", "libsndfile1"} <= packages
    entrypoint = [args for name, args in stage if name == "ENTRYPOINT"]
    assert entrypoint, "Dockerfile has no ENTRYPOINT"
    scripts = pyproject()["project"]["scripts"]
    assert json.loads(entrypoint[-1]) == ["speechbatch"]
    assert scripts["speechbatch"] == "speechbatch.cli:main"


def test_dockerfile_runs_as_a_non_root_user() -> None:
    """The final stage switches to a named, non-root user before the entrypoint."""
    users = [args for name, args in final_stage() if name == "USER"]
    assert users
    assert users[-1].split(":")[0] not in {"root", "0"}


def test_dockerfile_copies_what_install_and_migrate_need() -> None:
    """The build copies pyproject, its readme and every package (migrations are inside `jobs`)."""
    sources = set()
    for name, args in dockerfile_instructions():
        if name == "COPY" and "--from" not in args:
            sources |= {src.rstrip("/") for src in args.split()[:-1]}
    project = pyproject()
    packages = {
        pattern.rstrip("*")
        for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    needed = {"pyproject.toml", project["project"]["readme"]}
    assert needed | packages <= sources
    ignored = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith(("#", "!"))
    ]
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), source
    # Secrets stay out of the build context, and so out of every image layer.
    assert ".env" in ignored


# --- monitoring (issue 13) ----------------------------------------------------------------------


def _scrape_targets() -> dict[str, list[tuple[str, int]]]:
    """Scrape job name -> (host, port) of each static or DNS target in deploy/prometheus.yml."""
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    targets: dict[str, list[tuple[str, int]]] = {}
    for job in config["scrape_configs"]:
        found = targets.setdefault(job["job_name"], [])
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                found.append((host, int(port)))
        for dns in job.get("dns_sd_configs", []):
            found += [(name, int(dns["port"])) for name in dns["names"]]
    return targets


def test_prometheus_scrapes_the_real_services_on_their_metrics_ports(
    services: dict[str, Any],
) -> None:
    """Each scrape target is a compose service on the port it serves metrics on: the api's
    published HTTP port, and the worker/beat metrics ports compose sets for them."""
    env = services["worker"]["environment"]
    ports = {
        "api": int(argv(services["api"]["command"])[-1]),
        "worker": int(env["SPEECHBATCH_WORKER_METRICS_PORT"]),
        "beat": int(env["SPEECHBATCH_BEAT_METRICS_PORT"]),
    }
    scraped = {target for found in _scrape_targets().values() for target in found}
    assert scraped == set(ports.items())
    assert all(host in services for host, _ in scraped)


def test_monitoring_services_mount_the_deploy_files(services: dict[str, Any]) -> None:
    """Prometheus mounts deploy/prometheus.yml as its config, and Grafana mounts provisioning
    naming Prometheus as its data source and a dashboard provider for the mounted JSON."""
    prom = [v.split(":")[0] for v in services["prometheus"]["volumes"]]
    assert "./deploy/prometheus.yml" in prom
    assert any(
        "--config.file=/etc/prometheus/prometheus.yml" in a
        for a in services["prometheus"]["command"]
    )
    mounts = dict(v.split(":")[:2] for v in services["grafana"]["volumes"])
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    dashboard_dir = str(Path(mounts["./deploy/grafana/speechbatch.json"]).parent)
    source = yaml.safe_load((GRAFANA_DIR / "provisioning/datasources/prometheus.yml").read_text())
    assert [d["url"] for d in source["datasources"]] == ["http://prometheus:9090"]
    assert "prometheus" in services
    provider = yaml.safe_load((GRAFANA_DIR / "provisioning/dashboards/speechbatch.yml").read_text())
    assert [p["options"]["path"] for p in provider["providers"]] == [dashboard_dir]


def test_grafana_dashboard_queries_metrics_the_code_exports() -> None:
    """Every metric the dashboard queries is one that jobs.metrics or workers.metrics exports."""
    exported = {
        sample_name
        for family in REGISTRY.collect()
        for sample_name in (family.name, f"{family.name}_total", f"{family.name}_bucket")
    }
    exported |= {
        "speechbatch_items",
        "speechbatch_queue_depth",
        "speechbatch_estimated_cost_usd",
    }  # jobs.metrics.SystemCollector's gauges (read from a database at scrape time)
    dashboard = json.loads((GRAFANA_DIR / "speechbatch.json").read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bspeechbatch_[a-z_]+", target["expr"])
    }
    assert queried and queried <= exported, queried - exported
