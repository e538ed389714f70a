"""The container image, checked without Docker: the Dockerfile and .dockerignore parsed for what
they must hold, and the HEALTHCHECK's probe run against a real bot."""

from __future__ import annotations

import asyncio
import fnmatch
import importlib.metadata
import json
import os
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import BotFactory

ROOT = Path(__file__).parent.parent


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def instructions() -> list[Instruction]:
    """The Dockerfile's instructions, with `\\` continuations joined and comments dropped."""
    result: list[Instruction] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        result.append(Instruction(keyword.upper(), args.strip()))
    assert not pending, "the Dockerfile ends in a continuation"
    return result


def stages() -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for instruction in instructions():
        if instruction.keyword == "FROM":
            result.append([])
        assert result, "the Dockerfile must start with FROM"
        result[-1].append(instruction)
    return result


def only(stage: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in stage if i.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {found}"
    return found[0]


def env_of(stage: list[Instruction]) -> dict[str, str]:
    values: dict[str, str] = {}
    for instruction in stage:
        if instruction.keyword == "ENV":
            for pair in instruction.args.split():
                name, _, value = pair.partition("=")
                values[name] = value
    return values


def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(path: str) -> bool:
    parts = Path(path).parts
    for pattern in dockerignore():
        bare = pattern.removeprefix("**/")
        for i, part in enumerate(parts):
            prefix = "/".join(parts[: i + 1])
            if fnmatch.fnmatch(prefix, pattern) or fnmatch.fnmatch(part, bare):
                return True
    return False


def test_multi_stage_build_a_wheel_then_install_it_into_a_slim_runtime() -> None:
    build, runtime = stages()
    assert build[0].args.endswith(" AS build")
    assert "slim" in build[0].args and "slim" in runtime[0].args
    build_steps = " ".join(i.args for i in build if i.keyword == "RUN")
    assert "pip wheel" in build_steps and "pip install --no-deps /wheels/" in build_steps
    assert [i.args for i in runtime if i.keyword == "COPY" and "--from=build" in i.args] == [
        "--from=build /opt/venv /opt/venv"]
    assert "/opt/venv/bin" in env_of(runtime)["PATH"]
    # No compiler or pip caches in the runtime: it installs nothing itself.
    assert not any("pip" in i.args for i in runtime if i.keyword == "RUN")


def test_python_version_matches_the_project() -> None:
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = requires.removeprefix(">=")
    for stage in stages():
        image = stage[0].args.split()[0]
        assert image.startswith(f"python:{minimum}"), image


def test_runs_as_a_non_root_user_created_in_the_image() -> None:
    runtime = stages()[-1]
    user = only(runtime, "USER").args
    assert user not in ("root", "0") and not user.startswith("0:")
    setup = " ".join(i.args for i in runtime if i.keyword == "RUN")
    useradd = setup.split("useradd ", 1)[1].split("&&")[0].split()
    assert useradd[-1] == user and "--uid" in useradd
    keywords = [i.keyword for i in runtime]
    assert keywords.index("USER") < keywords.index("CMD")
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "RUN")


def test_serves_port_3000_and_starts_the_bot() -> None:
    runtime = stages()[-1]
    assert only(runtime, "EXPOSE").args == "3000"
    assert env_of(runtime)["PORT"] == "3000"
    assert json.loads(only(runtime, "CMD").args) == ["python", "-m", "bot"]


def test_healthcheck_probes_healthz_with_python() -> None:
    runtime = stages()[-1]
    healthcheck = only(runtime, "HEALTHCHECK").args
    options, _, command = healthcheck.partition("CMD ")
    assert json.loads(command) == ["python", "-m", "bot.healthcheck"]
    assert "--interval=" in options and "--timeout=" in options
    source = (ROOT / "bot" / "healthcheck.py").read_text()
    assert "/healthz" in source and "PORT" in source
    from bot import healthcheck
    from bot.config.settings import DEFAULT_PORT
    assert healthcheck.DEFAULT_PORT == str(DEFAULT_PORT)  # the slim probe imports no settings


def test_configuration_comes_from_outside_and_state_goes_to_a_volume() -> None:
    runtime = stages()[-1]
    env = env_of(runtime)
    assert env["CALLBOT_CONFIG"] == "/app/callbot.toml"
    assert env["DATABASE_URL"] == "sqlite:////data/callbot.db"
    assert env["AUDIT_SPOOL"] == "/data/callbot.db.audit-spool"  # beside it, as without the setting
    assert json.loads(only(runtime, "VOLUME").args) == ["/data"]
    setup = " ".join(i.args for i in runtime if i.keyword == "RUN")
    assert "chown callbot:callbot /data" in setup
    assert only(runtime, "WORKDIR").args == "/app"
    # The manifest is there for `callbot manifest` (found in the working directory).
    assert any(i.args == "manifest.yml /app/manifest.yml" for i in runtime if i.keyword == "COPY")
    # Nothing secret is baked in.
    text = (ROOT / "Dockerfile").read_text()
    for name in ("SLACK_", "EVOVOICE_PASSWORD", "xoxb-", "xapp-"):
        assert name not in text


def test_every_copied_path_exists_and_is_in_the_build_context() -> None:
    for stage in stages():
        for instruction in stage:
            if instruction.keyword != "COPY" or instruction.args.startswith("--from"):
                continue
            *sources, _ = instruction.args.split()
            for source in sources:
                assert (ROOT / source).exists(), source
                assert not ignored(source), f"{source} is excluded by .dockerignore"


@pytest.mark.parametrize(
    "path",
    [".env", ".env.production", ".venv", ".git", "callbot.db", "callbot.db-wal", "callbot.toml",
     "tests", "bot/__pycache__", ".mypy_cache", ".pytest_cache", "callbot.egg-info"],
)
def test_dockerignore_keeps_secrets_state_and_clutter_out(path: str) -> None:
    assert ignored(path)


async def healthcheck(port: int | str | None, cwd: Path | None = None,
                      **extra: str) -> int:
    env = {key: value for key, value in os.environ.items()
           if key.upper() not in ("PORT", "PORT_FILE")}
    if port is not None:
        env["PORT"] = str(port)
    env.update(extra)
    env["PYTHONPATH"] = str(ROOT)  # run from `cwd`, as in the container's /app
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.healthcheck", env=env, cwd=cwd,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(process.wait(), 30)


async def test_the_healthcheck_reads_port_where_the_bot_does(
    bot_factory: BotFactory, tmp_path: Path
) -> None:
    """PORT set in the working directory's .env (not the container's environment): the bot
    listens there, and the healthcheck must probe there, or the container is restarted for
    ever as unhealthy."""
    bot = await bot_factory("http")
    (tmp_path / ".env").write_text(f"SLACK_BOT_TOKEN=xoxb-x\nport={bot.runtime.port}\n")
    assert await healthcheck(None, cwd=tmp_path) == 0


async def test_the_healthcheck_reads_port_as_the_bot_does_from_a_file_or_with_spaces(
    bot_factory: BotFactory, tmp_path: Path
) -> None:
    # The bot reads PORT from PORT_FILE too, as every setting, and " 3000 " as 3000: the
    # healthcheck probed 3000, or no URL at all, and the container was unhealthy for ever.
    bot = await bot_factory("http")
    assert await healthcheck(f" {bot.runtime.port} ") == 0
    port_file = tmp_path / "port"
    port_file.write_text(f"{bot.runtime.port}\n")
    assert await healthcheck(None, cwd=tmp_path, PORT_FILE=str(port_file)) == 0
    port_file.write_text(f"{bot.runtime.port}\r\n", encoding="utf-8-sig")  # as Notepad saved it
    assert await healthcheck(None, cwd=tmp_path, PORT_FILE=str(port_file)) == 0


async def test_the_healthcheck_passes_against_a_running_bot(bot_factory: BotFactory) -> None:
    bot = await bot_factory("socket")
    # Liveness, not readiness: Slack refusing the token (/readyz 503) is no reason to restart.
    bot.slack.fail("auth.test", "invalid_auth")
    assert await healthcheck(bot.runtime.port or 0) == 0


async def test_the_healthcheck_probes_the_bot_directly_whatever_proxy_the_container_names(
    bot_factory: BotFactory, refused_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A container behind a forward proxy (`-e HTTP_PROXY=…`, for the bot's requests to Slack and
    Evo Voice) without NO_PROXY: urllib sent the probe of 127.0.0.1 to the proxy, which can't reach
    the container's loopback, and the bot was unhealthy for ever."""
    bot = await bot_factory("http")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    proxy = f"http://127.0.0.1:{refused_port}"
    assert await healthcheck(bot.runtime.port or 0, HTTP_PROXY=proxy, http_proxy=proxy,
                             HTTPS_PROXY=proxy, ALL_PROXY=proxy) == 0


async def test_the_healthcheck_fails_when_the_bot_is_down_or_not_ready(
    bot_factory: BotFactory, refused_port: int
) -> None:
    assert await healthcheck(refused_port) == 1
    bot = await bot_factory("http")
    bot.runtime.ready = False  # /healthz answers 503 while starting or stopping
    assert await healthcheck(bot.runtime.port or 0) == 1


def lock_pins(name: str) -> dict[str, tuple[str, list[str]]]:
    """A lock file's pins: normalised name -> (version, its sha256 hashes)."""
    text = (ROOT / name).read_text().replace("\\\n", " ")
    pins: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        requirement, *options = line.split()
        package, _, version = requirement.partition("==")
        hashes = [o.removeprefix("--hash=sha256:") for o in options]
        assert version and hashes, f"{name}: {line!r} is not pinned with a hash"
        assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), line
        pins[canonicalize_name(package)] = (version, hashes)
    return pins


def test_python_packages_come_only_from_hash_pinned_locks() -> None:
    build = stages()[0]
    steps = " && ".join(i.args for i in build if i.keyword == "RUN").split(" && ")
    installs = [s for s in steps if " install " in s]
    assert installs and all("--no-deps" in s for s in installs), installs
    assert any("--require-hashes" in s and "-r requirements.lock" in s for s in installs)
    assert any("--require-hashes" in s and "-r requirements-build.lock" in s for s in installs)
    # The wheel is built with the locked setuptools, not whatever build isolation would fetch.
    assert all("--no-build-isolation" in s for s in steps if "pip wheel" in s)


def test_the_lock_pins_every_runtime_dependency_within_its_range() -> None:
    pins = lock_pins("requirements.lock")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for dependency in project["dependencies"]:
        requirement = Requirement(dependency)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in requirements.lock: run `make lock`"
        assert requirement.specifier.contains(pins[name][0]), f"{name} {pins[name][0]}"
    assert {"setuptools", "wheel"} <= set(lock_pins("requirements-build.lock"))


def test_the_tests_run_the_versions_the_image_ships() -> None:
    # `make test` installs within requirements.lock (the Makefile's constraints.txt): a test that
    # passed on another httpx or aiohttp than the image's would say nothing of the image.
    installed = {canonicalize_name(d.metadata["Name"]): d.version
                 for d in importlib.metadata.distributions()}
    differ = {name: f"{installed[name]}, locked {version}"
              for name, (version, _) in lock_pins("requirements.lock").items()
              if name in installed and installed[name] != version}
    assert not differ, f"{differ}: run `make test`, which installs the locked versions"


def test_the_image_is_labelled_with_the_projects_version() -> None:
    runtime = stages()[-1]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert f"VERSION={version}" in [i.args for i in runtime if i.keyword == "ARG"]
    labels = only(runtime, "LABEL").args
    assert 'org.opencontainers.image.version="${VERSION}"' in labels
    assert 'org.opencontainers.image.title="callbot"' in labels


def test_both_stages_start_from_the_same_base_image() -> None:
    images = [stage[0].args.split()[0] for stage in stages()]
    assert len(set(images)) == 1, images
    image = images[0]
    if "@" in image:  # pinned: the digest must be whole (see the Dockerfile's comment)
        assert re.fullmatch(r"[^@]+@sha256:[0-9a-f]{64}", image), image
