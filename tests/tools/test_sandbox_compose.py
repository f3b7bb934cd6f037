"""Static checks of docker-compose.yml and tools/Dockerfile (there is no Docker engine in CI)."""

from __future__ import annotations

from pathlib import Path

import yaml

from tools.server.cli import parse_args

ROOT = Path(__file__).resolve().parents[2]


def _service() -> dict:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return compose["services"]["sandbox"]


def test_compose_sandbox_service() -> None:
    svc = _service()
    assert svc["build"] == {"context": ".", "dockerfile": "tools/Dockerfile"}
    assert svc["ports"] == ["127.0.0.1:8080:8080"]
    assert svc["read_only"] is True
    assert any(t.startswith("/tmp") for t in svc["tmpfs"])
    assert svc["cap_drop"] == ["ALL"]
    assert set(svc.get("cap_add", [])) <= {"SYS_ADMIN"}
    assert "no-new-privileges:true" in svc["security_opt"]
    assert svc["pids_limit"] > 0 and svc["mem_limit"]
    assert not str(svc.get("user", "10001")).startswith("0")
    check = " ".join(svc["healthcheck"]["test"])
    assert "/health" in check and "8080" in check


def test_compose_command_parses() -> None:
    command = _service()["command"]
    assert command[:3] == ["python", "-m", "tools.server"]
    settings = parse_args(command[3:])
    assert settings.port == 8080 and settings.allow_weaker_isolation


def test_dockerfile() -> None:
    text = (ROOT / "tools" / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert lines[0].startswith("FROM python:") and "slim" in lines[0]
    assert any(line.startswith("USER ") and not line.endswith((" root", " 0")) for line in lines)
    assert "numpy" in text and "sympy" in text and "fastapi" in text and "uvicorn" in text
    assert "pytest" in text  # language: pytest needs it in the image
    assert "COPY tools/" in text and "EXPOSE 8080" in text
    assert "tools.server" in lines[-1] and "8080" in lines[-1]
    assert "HEALTHCHECK" in text and "/health" in text


def test_dockerignore_keeps_context_small() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored
