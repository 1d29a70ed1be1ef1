"""The paper's network and training recipe (Krizhevsky, Sutskever & Hinton, 2012).

Every hyperparameter of the paper is named once here. Variants of the architecture are
selected with a config string, e.g. `--config=configs/alexnet.py:one_column`:

  one_column            the 1-GPU comparison net ("Training on Multiple GPUs" and its footnote)
  no_lrn                without LRN ("Local Response Normalization")
  non_overlapping_pool  pooling with s = z = 2 instead of s = 2, z = 3 ("Overlapping Pooling")
  six_conv              an extra conv layer over the last pooling layer ("Results")
  tanh                  saturating tanh units instead of ReLUs ("ReLU Nonlinearity", Figure 1)
  caffe                 Caffe's conventions, for its bvlc_alexnet weights (`supervision.caffe`)
"""

import ml_collections

VARIANTS = ("one_column", "no_lrn", "non_overlapping_pool", "six_conv", "tanh", "caffe")


def conv(name, features, kernel, stride=1, padding="SAME", reads="own", lrn=False, pool=""):
  """One convolutional layer of the layer table (see `supervision.models`)."""
  return dict(
    name=name,
    features=features,
    kernel=kernel,
    stride=stride,
    padding=padding,
    reads=reads,
    lrn=lrn,
    pool=pool,
  )


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  """Returns the paper's configuration, optionally changed into one of `VARIANTS`."""
  config = ml_collections.ConfigDict()

  # Data ("The Dataset", "Data Augmentation").
  config.dataset = "imagenet2012"
  config.data_dir = ""
  config.class_list = ""
  # Folder datasets: the classes (folder names) to read, label i for the i-th, the other
  # classes' folders left out; (): all classes (the class_list's, or the sorted folders).
  config.classes = ()
  config.num_classes = 1000
  config.image_size = 256  # shorter side rescaled to 256, then the central 256x256 patch
  config.crop_size = 224  # random 224x224 patches for training
  config.pca_lighting_std = 0.1  # std of the a_i in the PCA colour augmentation
  # What multiplies a_i in the lighting noise: "std", sqrt(lambda_i) of 0-255 pixel values (as in
  # cuda-convnet), or "eigenvalue", the paper's lambda_i with pixel values in [0, 1].
  config.lighting_scale = "std"
  # The training augmentations, each switchable off: random_crop=False trains on the central
  # crop, flip=False never reflects, lighting=False adds no PCA lighting noise.
  config.augmentation = ml_collections.ConfigDict(dict(random_crop=True, flip=True, lighting=True))
  config.channel_order = "rgb"  # of the network's input: "rgb", or "bgr" (weights from Caffe)
  # The paper subtracts the mean image only; True also divides each channel by its standard
  # deviation over the training set, the unit-variance input that model.init="scaled" assumes.
  config.standardize_inputs = False
  config.train_split = "train"
  config.eval_split = "validation"
  # Worker processes decoding images (0: threads of the main process only) and threads decoding
  # in each process; -1 follows the host's cores (`supervision.input_pipeline.loader_settings`).
  config.num_workers = -1
  config.num_threads = -1
  config.cache_images = False  # decode each split into memory once, before training
  # Who decodes the JPEGs of a prepared dataset: "host" (simplejpeg in the loader's threads and
  # processes) or "dali" (NVIDIA DALI: nvJPEG on the GPU; requirements-dali.txt).
  config.decoder = "host"
  # --mode=prepare: the 256x256 images stored as JPEGs of this quality, in ArrayRecord shards of
  # this many examples (about 20 MB each at quality 90), for these splits (empty: all).
  config.prepare = ml_collections.ConfigDict(dict(jpeg_quality=90, shard_size=1024, splits=()))
  # --mode=import_caffe: the .caffemodel to import into the workdir's first checkpoint, and Caffe's
  # mean image (a .binaryproto; empty: Caffe's per-channel mean) for its statistics file.
  config.caffe = ml_collections.ConfigDict(dict(model="", mean=""))

  # The network ("The Architecture", Figure 2).
  config.model = ml_collections.ConfigDict()
  m = config.model
  m.name = "column_net"
  m.columns = 2  # the paper's two GPUs
  m.activation = "relu"
  # "Local Response Normalization"; alpha_over_n switches to the convention of cuda-convnet's
  # released code and Caffe, where alpha is divided by n; across_columns runs the window over the
  # maps of all columns instead of each column's own (the two GPUs').
  # after_pool normalizes the pooled maps instead (cuda-convnet's CIFAR-10 nets).
  m.lrn = ml_collections.ConfigDict(
    dict(
      k=2.0, n=5, alpha=1e-4, beta=0.75, alpha_over_n=False, across_columns=False, after_pool=False
    )
  )
  # "Overlapping Pooling". partial_windows: cuda-convnet's output size, ceil((n - window) / stride)
  # + 1, the last window running past the map's edge (max over, or mean of, the pixels inside it);
  # no change to this net's sizes (55, 27 and 13 take the windows exactly).
  m.pool = ml_collections.ConfigDict(dict(window=3, stride=2, partial_windows=False))
  # `features` counts the kernels of both columns together; `reads` is which maps of the layer
  # below each column sees: "own" (its own column) or "all" (both columns); `pool` is "max",
  # "avg" or "" (none). conv1 has total
  # padding 3 (0 before, 3 after), which is what cuda-convnet's rounding of 1 + ceil((224 - 11) / 4)
  # output positions amounts to, so 224 gives 55.
  m.conv = (
    conv("conv1", 96, 11, stride=4, padding=((0, 3), (0, 3)), reads="all", lrn=True, pool="max"),
    conv("conv2", 256, 5, lrn=True, pool="max"),
    conv("conv3", 384, 3, reads="all"),
    conv("conv4", 384, 3),
    conv("conv5", 256, 3, pool="max"),
  )
  m.dense = (4096, 4096)  # fc6, fc7; fc8 has num_classes outputs
  m.dropout_rate = 0.5  # on the outputs of fc6 and fc7 ("Dropout")
  m.dropout_form = "paper"  # or "inverted" (`supervision.models.Dropout`)
  m.init = "normal"  # or "scaled": fan-in scaled, He (ReLU) or LeCun (tanh) normal
  m.init_std = 0.01  # weights ~ N(0, 0.01) ("Details of learning")
  m.layer_init_std = {}  # {layer name: std} in place of init_std for those layers
  m.init_bias_one = ("conv2", "conv4", "conv5", "fc6", "fc7")  # biases 1 here, 0 elsewhere
  m.dtype = "float32"

  # Training ("Details of learning").
  config.batch_size = 128
  config.num_epochs = 90
  config.num_train_steps = -1  # when > 0 it overrides num_epochs
  config.learning_rate = 0.01
  config.momentum = 0.9
  config.weight_decay = 5e-4
  config.decay_biases = False  # cuda-convnet decayed weights only; the paper says "weight w"
  config.lr_schedule = "plateau"  # "plateau" (the paper), "step" or "constant"
  config.lr_drop_factor = 0.1
  config.plateau_patience = 3  # evaluations without improvement before the lr drops
  config.plateau_min_delta = 1e-3  # improvement of the validation error that counts
  config.max_lr_drops = 3
  config.lr_step_epochs = (30, 60, 80)  # for lr_schedule = "step"
  config.seed = 0
  # When > 0, training ends at the first logged interval whose mean training top-1 error is at
  # most this (Figure 1 measures the time to 25%); -1: it runs all its steps.
  config.stop_at_train_error = -1.0
  # Fine-tuning: a new run (its workdir has no checkpoint) starts from the layers of the run in
  # this workdir (its checkpoint of init_from_step, -1: the latest) whose names and shapes match,
  # all but the classifier; optimizer state, step and schedule start fresh. "": from scratch.
  config.init_from = ""
  config.init_from_step = -1

  # Bookkeeping.
  config.log_every_steps = 50
  config.eval_every_steps = -1  # -1: once per epoch
  config.checkpoint_every_steps = 1000
  config.keep_checkpoints = 3
  config.num_eval_batches = -1  # -1: the whole eval split
  config.eval_checkpoint_step = -1  # what eval, predict, features and figures restore; -1: latest

  # Inference (`supervision.inference`, `supervision.predict`). --mode=predict: the top-5 classes
  # of the image file or folder of images `path`, on the central crop or the 10 views, with
  # `figure` also as PNGs (Figure 4) in WORKDIR/predictions/. --mode=ensemble: the softmax outputs
  # of the networks of `workdirs` (a tuple of workdirs) averaged on eval_split. --mode=features:
  # the last hidden layer's activations on `split` ("": eval_split) in WORKDIR/features/.
  config.predict = ml_collections.ConfigDict(dict(path="", ten_views=False, figure=False))
  config.ensemble = ml_collections.ConfigDict(dict(workdirs=()))
  config.features = ml_collections.ConfigDict(dict(split=""))

  # --mode=retrieval ("Qualitative Evaluations", Figure 4 right): the eval split's vectors of
  # WORKDIR/features/ (--mode=features) query the training split's, by Euclidean distance and by
  # the Hamming distance of binary codes from an auto-encoder (`supervision.binary_codes`).
  config.retrieval = ml_collections.ConfigDict(
    dict(
      code_bits=(64, 128, 256),  # one auto-encoder per code length
      hidden=(1024,),  # ReLU layers of the encoder (the decoder mirrors them)
      code_noise=2.0,  # std of the Gaussian noise on the code units' inputs in training
      steps=10_000,  # Adam steps of each auto-encoder
      batch_size=256,
      learning_rate=1e-3,  # Adam's, decayed to 0 by a cosine over the steps
      k=(1, 6, 10, 50),  # precision@k for these k (Figure 4 shows 6 neighbours)
      num_queries=-1,  # a random subset of the eval split as queries; -1: all of it
      query_chunk=1024,  # queries x database vectors compared at a time, on the device
      database_chunk=8192,
      figure_queries=5,  # rows of WORKDIR/figures/figure4_right.png (0: no figure)
      seed=0,  # the query subset, the figure's rows, the auto-encoders' initialization
    )
  )

  # Parallelism ("Training on Multiple GPUs"): the paper's two GPUs are the mesh axis "model" of
  # size 2 (column c on model-device c); "data" splits the batch (-1: all devices "model" leaves).
  config.mesh = ml_collections.ConfigDict(dict(data=-1, model=1))
  # Multi-host runs: every process gets the same coordinator "host:port", the process count
  # and its own id. An empty address means a single process.
  config.distributed = ml_collections.ConfigDict(
    dict(coordinator_address="", num_processes=1, process_id=0)
  )

  return apply_variant(config, variant)


def apply_variant(config: ml_collections.ConfigDict, variant: str) -> ml_collections.ConfigDict:
  """Changes the paper's network into one of `VARIANTS` (no-op for "")."""
  m = config.model
  if variant == "":
    pass
  elif variant == "one_column":
    # Half the kernels in conv1-conv4; conv5 and the FC layers unchanged (the footnote of
    # "Training on Multiple GPUs").
    m.columns = 1
    m.conv = tuple(
      dict(c, features=c["features"] // 2) if c["name"] != "conv5" else c for c in m.conv
    )
  elif variant == "no_lrn":
    m.conv = tuple(dict(c, lrn=False) for c in m.conv)
  elif variant == "non_overlapping_pool":
    m.pool.window = 2
  elif variant == "six_conv":
    # The paper does not give the extra layer's shape; we use conv5's: 256 3x3 kernels. The FC
    # layers are numbered after the conv layers, so the hidden ones (bias 1) are fc7 and fc8.
    m.conv = m.conv + (conv("conv6", 256, 3),)
    m.init_bias_one = ("conv2", "conv4", "conv5", "conv6", "fc7", "fc8")
  elif variant == "tanh":
    m.activation = "tanh"
  elif variant == "caffe":
    # bvlc_alexnet of the BVLC model zoo: 227x227 BGR crops, conv1 unpadded (227 gives 55), LRN with
    # k = 1 and alpha / n over all of a layer's maps (Caffe's LRN knows no columns), and dropout
    # that scales in training (Caffe's), so that test outputs pass unscaled.
    config.crop_size = 227
    config.channel_order = "bgr"
    m.conv = (dict(m.conv[0], padding=((0, 0), (0, 0))), *m.conv[1:])
    m.lrn.update(k=1.0, alpha_over_n=True, across_columns=True)
    m.dropout_form = "inverted"
  else:
    raise ValueError(f"Unknown variant {variant!r} of configs/alexnet.py; choose from {VARIANTS}.")
  return config
