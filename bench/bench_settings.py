"""Settings for benchmarks: the portal's own settings plus a URLconf with a bench-only view.

Selected with `DJANGO_SETTINGS_MODULE=bench.bench_settings`; nothing in the portal imports it,
so the bare-token view never exists in a real deployment."""

import os

from dispatchportal.settings import *  # noqa: F403  the bench runs the portal exactly as configured

ROOT_URLCONF = os.environ.get("BENCH_ROOT_URLCONF", "bench.bench_urls")
