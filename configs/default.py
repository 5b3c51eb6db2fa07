"""Default configuration: every key a run can set, with the paper's recipe as defaults.

Experiment files import this and override a few fields (Flax-examples style); variants are selected with
`--config configs/FILE.py:variant` (big_vision style). This file is the contract between the modules:
`config.data` is read by `input_pipeline`, `config.optim` and `config.combine` by `optim`, `config.distill` by
`distill.get`, `config.model` / `config.teacher` by `models.create`, the rest by `train`.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  # The network this run trains. A teacher run (T-DNN) and a student-alone run (S-DNN) set distill.method = "none".
  config.model = ml_collections.ConfigDict()
  config.model.name = "vgg_student"
  config.model.width = 1.0
  config.model.dropout = 0.5  # rate on the hidden FC layers (paper VGGs only; the paper's 0.5)

  # Frozen teacher for distillation runs: restored from a teacher run's workdir (its best, else latest checkpoint)
  # or an explicit checkpoint path. Unused when distill.method == "none".
  config.teacher = ml_collections.ConfigDict()
  config.teacher.name = "vgg_teacher"
  config.teacher.width = 1.0
  config.teacher.dropout = 0.5
  config.teacher.workdir = ""
  config.teacher.checkpoint = ""

  # Distillation method and its options (see svdkd_jax.distill.get).
  config.distill = ml_collections.ConfigDict()
  config.distill.method = "none"  # none | kd_svd | fsp | soft_target
  config.distill.k = 1  # kd_svd: number of distilled singular vectors per tap
  config.distill.beta = 8.0  # kd_svd: RBF width
  config.distill.svd_grad = "paper"  # kd_svd: paper | exact | sskd_code
  config.distill.loss_scale = "sskd"  # kd_svd: sskd (batch sum x 1/2 x sqrt(k)) | mean
  config.distill.temperature = 4.0  # soft_target
  # 1stage: main task + clipped distillation gradient every step (the released code).
  # 2stage: distillation alone for `init_epochs`, then the main task alone (FSP's procedure; the paper's table).
  # The main phase is the full `train.epochs` recipe (optimiser reset, schedule restarted): init_epochs + epochs.
  config.distill.mechanism = "1stage"
  config.distill.init_epochs = 0

  # How the distillation gradient joins the main one (see svdkd_jax.optim.combine_gradients).
  config.combine = ml_collections.ConfigDict()
  config.combine.rule = "sskd"  # sskd | poster | sum | global_norm
  config.combine.weight = 1.0  # distillation weight (used by "sum")

  # Data (see svdkd_jax.input_pipeline).
  config.data = ml_collections.ConfigDict()
  config.data.source = "tfds"  # tfds | archive | digits
  config.data.name = "cifar100"  # tfds dataset name
  config.data.data_dir = ""  # tfds data_dir ("" = tfds default; a GCS path works)
  config.data.path = ""  # archive: folder holding meta.json and <split>.npz
  config.data.cache_dir = ""  # archive: where the decoded uint8 cache goes ("" = next to the archive or ~/.cache)
  config.data.train_split = "train"
  config.data.eval_split = "test"
  config.data.num_classes = 100
  config.data.image_size = 32  # images are resized to this (0 = keep)
  config.data.class_subset = 0  # 0 = all classes, n = the first n classes
  config.data.holdout = 0  # hold out this many training examples as the eval split (tuning without the test set)
  # A fixed, seeded subset of the training split (0 = all); with it, `holdout` draws from the images outside it.
  config.data.train_per_class = 0
  # Label budget (0 = all): a fixed, seeded draw of this many labelled images per class; the other training images
  # stay in every batch and distillation loss with label -1 and zero cross-entropy weight (the released code's 50 %).
  config.data.labels_per_class = 0
  config.data.augment = "sskd"  # sskd (flip, rotate +-15 deg, pad 4 + crop) | flip_crop | none
  config.data.normalization = "dataset"  # dataset (per-channel stats of the train split) | sskd_bgr (authors')
  config.data.num_workers = 0  # grain worker processes (0 = in the main process)

  # Optimiser (see svdkd_jax.optim). Paper: Nesterov 0.9, 1e-2 -> 1e-3 at epoch 100 -> 1e-4 at 150, coupled L2 1e-4.
  config.optim = ml_collections.ConfigDict()
  config.optim.name = "sgd"  # sgd | adam
  config.optim.learning_rate = 1e-2
  config.optim.momentum = 0.9
  config.optim.nesterov = True
  config.optim.boundaries = (100, 150)  # epochs at which the learning rate is multiplied by decay_factor
  config.optim.decay_factor = 0.1
  config.optim.weight_decay = 1e-4  # on conv/dense kernels only
  config.optim.decoupled_weight_decay = False  # False: L2 term in the main loss (the authors' code)

  config.train = ml_collections.ConfigDict()
  config.train.epochs = 200
  config.train.batch_size = 128  # global batch
  config.train.eval_batch_size = 200
  config.train.log_every_steps = 50
  config.train.checkpoint_every_steps = 500
  config.train.keep_checkpoints = 3
  config.train.max_steps = 0  # > 0 stops early (tests, smoke runs)
  # Cross-entropy with a label budget: "batch" = mean over every image of the batch, unlabelled ones counting as
  # zero (the released code); "labelled" = mean over the labelled images of the batch. Equal with all labels.
  config.train.ce_reduction = "batch"
  return config
