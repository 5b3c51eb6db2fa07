"""svdkd_jax: KD-SVD (Lee, Kim, Song, ECCV 2018) in JAX and Flax NNX.

Where things live:
  svd.py             truncated SVD with its custom VJP (gradient modes "paper", "exact", "sskd_code"), alignment
  distill.py         distillation methods (kd_svd, fsp, soft_target, attention_transfer, dkd, none): one registry,
                     one signature
  optim.py           optax chain and the multi-task combination of main and distillation gradients
  taps.py            taps by name: the outputs of named submodules of any Flax NNX module (nnx.capture)
  models/            Flax NNX networks returning (logits, taps); the registry (models.register adds one's own)
  networks.py        a run's network: build, restore (teacher or student run), apply (eval or train mode, own or
                     named taps)
  input_pipeline.py  data sources (tfds, .npz archives, bundled digits), augmentation, sharded batches
  config.py          the schema: every config key with its default and valid values (`default()`, locked), the
                     earlier names of values (`ALIASES`, `canonical`) and the check of a config, `validate(config)`
  run_config.py      a config against the registries: network and method names, distillation options
  recipes.py         what the experiment configs are built from: `parse_arg`, variants, recipes, the quickstart
  config_files.py    config files by path, and the command line's flag parsing
  steps.py           the jitted train and eval steps (losses, gradients, metrics)
  train.py           train_and_evaluate(config, workdir): check, lock, build, resume, the loop
  workdir.py         a run's config.json and the same-run check on restart
  workdir_lock.py    one run per workdir
  main.py            command-line entry point
"""

__version__ = "0.1.0"
