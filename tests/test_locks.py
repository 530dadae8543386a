"""`lock_try`: one holder at a time across processes, never waiting; with Redis through the
process's one client, without it a file lock."""

import multiprocessing

import pytest

from dispatchportal.locks import lock_try


def _held_elsewhere(name: str, prefix: str, out: "multiprocessing.Queue[bool]") -> None:
    import django
    from django.conf import settings

    django.setup()
    settings.CACHE_KEY_PREFIX = prefix  # this test's namespace
    with lock_try(name, timeout_s=5) as held:
        out.put(held)


def _try_in_another_process(name: str, prefix: str) -> bool:
    """What another process (a second Celery worker) gets for the lock right now."""
    context = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue[bool] = context.Queue()
    process = context.Process(target=_held_elsewhere, args=(name, prefix, out))
    process.start()
    process.join(60)
    return out.get(timeout=5)


@pytest.mark.parametrize("backend", ["redis", "file"])
def test_one_holder_at_a_time_across_processes(settings, tmp_path, backend):
    if backend == "redis":
        if not settings.REDIS_URL:
            pytest.skip("needs REDIS_URL")
    else:
        settings.REDIS_URL = ""
        settings.VAR_DIR = tmp_path
    with lock_try("tests:one-holder", timeout_s=5) as held:
        assert held
        with lock_try("tests:one-holder", timeout_s=5) as second:
            assert not second  # the same process, another caller: no reentry
        with lock_try("tests:another", timeout_s=5) as other:
            assert other  # locks are by name
    with lock_try("tests:one-holder", timeout_s=5) as again:
        assert again  # released on leaving


@pytest.mark.needs_redis
def test_a_lock_held_here_is_refused_to_another_process(settings):
    with lock_try("tests:cross-process", timeout_s=30) as held:
        assert held
        assert _try_in_another_process("tests:cross-process", settings.CACHE_KEY_PREFIX) is False
    assert _try_in_another_process("tests:cross-process", settings.CACHE_KEY_PREFIX) is True


@pytest.mark.needs_redis
def test_a_holder_that_died_frees_the_lock_when_it_expires(settings):
    """The Redis lock expires after `timeout_s`: a holder killed mid-work does not keep the
    application of webhooks stopped for good."""
    import time

    with lock_try("tests:expiring", timeout_s=0.3) as held:
        assert held
        time.sleep(0.5)
        with lock_try("tests:expiring", timeout_s=5) as second:
            assert second
