"""Data: random-access sources (`sources`), the archives' data root and writer (`archives`, `convert`) and the
jittable augmentation (`augment`).

`svdkd_jax.input_pipeline` builds the batched, sharded, checkpointable iterators on top of these.
"""

from svdkd_jax.data.archives import archive_path, data_root
