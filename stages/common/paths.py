"""Every file and folder the pipeline reads or writes, relative to the repository root.

``dvc.yaml`` declares the same paths (tests/test_paths.py checks that they agree); the stages
and the ``lenet`` commands import them from here, so each is written once.
"""

from pathlib import Path

PARAMS = Path("params.yaml")
DVC_YAML = Path("dvc.yaml")

RAW = Path("data/raw")                      # fetch: the four MNIST IDX files
PREPARED = Path("data/prepared")            # normalize: the three splits
TRAIN_SPLIT = PREPARED / "train.parquet"
VAL_SPLIT = PREPARED / "val.parquet"
TEST_SPLIT = PREPARED / "test.parquet"

MODELS = Path("models")                     # train: weights, architecture, preprocessing
METRICS = Path("metrics")
TRAIN_METRICS = METRICS / "train.json"      # train: scores of the chosen epoch (DVC metrics)
TRAIN_RUN = METRICS / "train_run.json"      # train: how the run went (not scores)
HISTORY = METRICS / "history.csv"           # train: per epoch (DVC plots)
EVAL_METRICS = METRICS / "eval.json"        # evaluate: test accuracy and loss (DVC metrics)
PER_CLASS = METRICS / "per_class.csv"       # evaluate: precision and recall per digit (DVC plots)
CONFUSION = METRICS / "confusion.csv"       # evaluate: 10x10 counts (DVC plots)
MODEL_CARD = METRICS / "model_card.md"      # evaluate
PLOTS = Path("plots")                       # plot: figures only an image can show

CHECKPOINT = Path("checkpoints/train.npz")  # train: resume after an interruption (not DVC's)
STAGING = Path(".stage-tmp")                # where stages build outputs (ignored by git and DVC)
