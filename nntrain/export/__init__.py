"""Exporting a trained model to formats other tools run.

- ``nntrain.export.onnx``: a checkpoint as a self-contained ONNX model (normalisation
  included, raw pixel values in, logits and probabilities out), checked with ONNX
  Runtime when it is installed.
- ``nntrain.export.onnx_layers``: one function per layer type mapping it to standard
  ONNX operators; ``nntrain.export.builder`` the small graph builder they write into.

``onnx`` and ``onnxruntime`` are optional (``pip install 'nntrain[onnx]'``): they are
imported only by these modules, and a missing one is a ConfigError (exit 2) saying how
to install it.
"""
