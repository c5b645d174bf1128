"""The train stage: sensor data to a float GRU model and a bundle."""

import os

# Before TensorFlow is imported anywhere: quiet logs and oneDNN off, which also
# keeps float results identical from run to run.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
