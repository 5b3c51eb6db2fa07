"""svdkd_jax: KD-SVD (Lee, Kim, Song, ECCV 2018) in JAX and Flax NNX.

Where things live:
  svd.py             truncated SVD with its custom VJP (gradient modes "paper", "exact", "sskd_code"), alignment
  distill.py         distillation methods (kd_svd, fsp, soft_target, none): one registry, one signature
  optim.py           optax chain and the multi-task combination of main and distillation gradients
  models/            Flax NNX networks returning (logits, taps)
  networks.py        a run's network: build, restore (teacher or student run), apply (eval or train mode)
  input_pipeline.py  data sources (tfds, .npz archives, bundled digits), augmentation, sharded batches
  config.py          every config key with its default (`default()`, locked) and `validate(config)`
  recipes.py         what the experiment configs are built from: variants, recipes, the quickstart's config
  train.py           train_and_evaluate(config, workdir): train and eval steps, the loop
  workdir.py         a run's config.json and the same-run check on restart
  main.py            command-line entry point
"""

__version__ = "0.1.0"
