"""Test-session setup: 8 simulated CPU devices, set before jax is first imported, so
the data-parallel tests can compare 1 and 8 devices in one process."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
