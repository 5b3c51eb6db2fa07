"""The installed distribution is this package: its metadata version is `svdkd_jax.__version__`."""

import importlib.metadata

import svdkd_jax


def test_installed_metadata_matches_the_package_version():
  # Fails on a stale install (version bumped in one place, or an old build on the path): reinstall with pip.
  assert importlib.metadata.version("svdkd_jax") == svdkd_jax.__version__
