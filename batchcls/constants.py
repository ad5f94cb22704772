"""IMAGENET_MEAN/STD, BATCH_SIZE = 48, SHARD_IMAGES, MAX_SHARDS_IN_FLIGHT (each with its reason)."""

# torchvision's ImageNet statistics: what every timm DLA checkpoint was trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The batch the vendor's benchmarks (vamp -b 48) and the published figures use.
BATCH_SIZE = 48

# 1,000 crops of 224x224 are ~150 MB uncompressed: big enough to amortise a Ray task
# (~0.2 s overhead), small enough that a lost shard costs seconds, not minutes.
SHARD_IMAGES = 1000

# Full-resolution images (a vacc card resizes them itself) average ~0.6 MB each against 150 KB for a
# 224 crop: 240 of them (5 batches of 48) weigh about what a shard of 1000 crops does.
FULLRES_SHARD_IMAGES = 240

# Shards prepared but not yet consumed, per inference worker: two keep a worker fed
# while the next is being prepared; more only grows memory.
MAX_SHARDS_IN_FLIGHT_PER_WORKER = 2

# top-5 is what the seed table reports.
TOPK = 5

# Number of ImageNet-1k classes.
NUM_CLASSES = 1000

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp", ".tif", ".tiff")

# Niceness of prep tasks, and of inference workers. Where both share a host's cores, inference
# must not wait for a core: onnxruntime's threads meet at every operator, so one thread kept off
# its core by a prep task stalls them all. Prep at +10 runs in the time inference leaves free.
PREP_NICENESS = 10
WORKER_NICENESS = 0

# inference.normalize on the CPU provider when the job does not say: where the worker turns uint8
# crops into float32 (see README "NVIDIA GPUs"; both give the same logits bit for bit).
CPU_NORMALIZE = "host"

# CPUs a prep task asks for when its shard is already in the cache (as the driver's host sees it):
# reading ~150 KB a crop is a memcpy (~30 us), not a decode (~3 ms), so two such reads share a core
# and keep a GPU worker fed where one would leave it waiting (benchmarks/host_ceiling.py).
CACHED_READ_CPUS = 0.5
