"""Device mesh and shardings: data parallelism from one CPU to a multi-host TPU pod.

One mesh axis, "data", over every device of every process. The batch is sharded along it and the train state is
replicated, so `jax.jit` inserts the gradient all-reduce itself and BatchNorm statistics are computed over the global
batch (the mean over a sharded axis is a global mean under jit). This is the supported successor of `jax.pmap`.

The mesh uses `AxisType.Auto` on purpose: under `Explicit` axes, differentiating `jnp.linalg.svd` fails (seen
while building this package; svd.py's custom VJP is not affected).
"""

import os
import re
from typing import Any

import jax
from jax.experimental import multihost_utils
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

PyTree = Any
DATA_AXIS = "data"
# A process that sends the coordination service no heartbeat for this long is lost: the runtime then stops the
# others (its default, 100 s, keeps them waiting in their collectives for that long).
HEARTBEAT_TIMEOUT_S = 30
# How the runtime's errors begin (an absl status code), e.g. "UNKNOWN: Gloo all-reduce failed: ... Connection reset
# by peer" when a collective's peer process is gone.
_RUNTIME_FAILURE = re.compile(r"(UNKNOWN|INTERNAL|UNAVAILABLE|ABORTED|DEADLINE_EXCEEDED|CANCELLED): ")


def maybe_initialize_distributed() -> bool:
  """Calls `jax.distributed.initialize()` when the environment describes a multi-process run.

  Single-host runs (the default) skip it: initialising without a cluster would wait for a coordinator. Cloud TPU
  pods and SLURM set their own variables; elsewhere set `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES` and
  `JAX_PROCESS_ID`. Returns True if it initialised.

  Initialising also starts JAX's preemption sync manager, which takes SIGTERM over (`train._StopRequest`), and sets
  the heartbeat timeout after which a lost process stops the others (`HEARTBEAT_TIMEOUT_S`).
  """
  env = os.environ
  explicit = "JAX_COORDINATOR_ADDRESS" in env and int(env.get("JAX_NUM_PROCESSES", "1")) > 1
  if explicit:
    jax.distributed.initialize(
        coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
        num_processes=int(env["JAX_NUM_PROCESSES"]),
        process_id=int(env["JAX_PROCESS_ID"]),
        heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S)
    connect_cpu_collectives()
    return True
  if "TPU_WORKER_HOSTNAMES" in env and "," in env["TPU_WORKER_HOSTNAMES"]:
    # Cloud TPU pod slice: jax finds everything itself.
    jax.distributed.initialize(heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S)
    return True
  return False


def connect_cpu_collectives() -> None:
  """Sets up the cross-process CPU transport now, while the processes are in step, and without JAX's persistent
  compilation cache (multi-process CPU runs only).

  XLA connects its CPU collectives (gloo) at the first cross-process collective and gives up if the other processes
  have not arrived within 30 seconds ("Gloo context initialization failed: DEADLINE_EXCEEDED"). A run's first
  collective would otherwise be the checkpoint manager's barrier, reached after loading data and compiling: work
  whose duration differs between processes by more than that on a loaded machine. Backend start-up (`jax.devices()`)
  is a rendezvous without that limit, so a collective right after it finds every process there; later collectives
  reuse the connection and wait as long as a slow process needs.

  The persistent compilation cache (`JAX_COMPILATION_CACHE_DIR`) is turned off: only process 0 finds its entries
  (each process has its own keys, and only process 0 writes), and a step loaded from the cache on process 0 and
  compiled on the others waits forever in its first gloo all-reduce.
  """
  if jax.process_count() > 1 and jax.default_backend() == "cpu":
    jax.config.update("jax_enable_compilation_cache", False)
    multihost_utils.sync_global_devices("svdkd_jax: connect CPU collectives")


def lost_peer(error: BaseException) -> str | None:
  """Which process a multi-process run lost, if `error` is the runtime's failure of a computation across processes
  (a collective whose peer is gone): "process 1 of 2", or "a process of N" when more than one could be it; else None.

  With two processes the lost one is the other. With more, a collective's error does not say which peer failed, and
  asking the coordination service would have it stop this process first (see `HEARTBEAT_TIMEOUT_S`).
  """
  n = jax.process_count()
  if n == 1 or not _RUNTIME_FAILURE.match(str(error)):
    return None
  return f"process {1 - jax.process_index()} of 2" if n == 2 else f"a process of {n}"


def create_mesh(devices: list | None = None) -> Mesh:
  """A 1-D mesh named "data" over `devices` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else list(devices)
  return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices)


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the "data" axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  """Every device holds the whole array (train state, teacher)."""
  return NamedSharding(mesh, P())


def abstract(tree: PyTree, mesh: Mesh) -> PyTree:
  """`jax.ShapeDtypeStruct`s of `tree`'s arrays, replicated on `mesh`: a restore target for orbax."""
  sharding = replicated(mesh)
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def check_batch_size(global_batch_size: int, mesh: Mesh, name: str = "train.batch_size") -> None:
  """Raises a ValueError unless the global batch splits evenly over the devices and processes."""
  n = mesh.size
  if global_batch_size % n or global_batch_size % jax.process_count():
    raise ValueError(
        f"{name}={global_batch_size} must be divisible by the number of devices ({n}) and processes "
        f"({jax.process_count()}); set --config.{name} to a multiple of {n}.")


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
  """Places a host pytree (e.g. a freshly initialised state) on every device of `mesh`."""
  sharding = replicated(mesh)
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)
  # Multi-process: every process holds the same value; assemble global replicated arrays from the local copies.
  def put(x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):  # typed RNG keys travel as their raw data
      data = np.asarray(jax.random.key_data(x))
      return jax.random.wrap_key_data(jax.make_array_from_process_local_data(sharding, data, data.shape),
                                      impl=jax.random.key_impl(x))
    return jax.make_array_from_process_local_data(sharding, np.asarray(x), np.shape(x))
  return jax.tree.map(put, tree)
