"""Data: random-access sources (`sources`) and the jittable augmentation (`augment`).

`svdkd_jax.input_pipeline` builds the batched, sharded, checkpointable iterators on top of these.
"""
