"""tinygru edge runtime: the bundle format, the preprocessing contract and metrics.

The ground floor of tinygru: numpy, jsonschema and the standard library only,
never TensorFlow or Keras, so the same code runs in training and on a
Raspberry Pi. Submodules are imported on demand::

    from edge_runtime.bundle import Bundle, stage_writer
    from edge_runtime.preprocess import InputQuant, quantize_counts, windows
    from edge_runtime.metrics import accuracy, macro_f1, parity
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
