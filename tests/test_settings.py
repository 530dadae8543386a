"""Settings: production refuses to start without its secrets; defaults derive the rest."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION = {
    "DJANGO_ENV": "production",
    "SECRET_KEY": "prod-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
    "LIVEKIT_URL": "https://livekit.example.com",
    "LIVEKIT_API_KEY": "APIprod",
    "LIVEKIT_API_SECRET": "prod-livekit-secret-never-printed-0123456789",
}


def settings_of(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LIVEKIT_", "DJANGO_", "SECRET_KEY", "PUBLIC_"))
    }
    code = "from django.conf import settings as s; print(s.PUBLIC_LIVEKIT_URL, s.DEBUG)"
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='dispatchportal.settings'; django.setup(); "
            + code,
        ],
        env={**clean, "DISPATCHPORTAL_VAR_DIR": str(tmp_path), **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("missing", ["SECRET_KEY", "LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"])
def test_production_refuses_to_start_without_each_secret(missing, tmp_path):
    env = {k: v for k, v in PRODUCTION.items() if k != missing}
    result = settings_of(env, tmp_path)
    assert result.returncode != 0
    assert f"{missing} must be set when DJANGO_ENV=production" in result.stderr
    assert PRODUCTION["LIVEKIT_API_SECRET"] not in result.stderr


def test_production_starts_with_them_and_derives_the_browser_url(tmp_path):
    result = settings_of(PRODUCTION, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["wss://livekit.example.com", "False"]
    assert PRODUCTION["LIVEKIT_API_SECRET"] not in result.stdout + result.stderr


def test_development_needs_nothing(tmp_path):
    result = settings_of({}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ws://127.0.0.1:7880", "True"]
