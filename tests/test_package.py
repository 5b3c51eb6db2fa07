import svdkd_jax


def test_version():
  assert svdkd_jax.__version__ == "0.1.0"
