"""hls4ml route (``route.py``) and the QKeras twin of the ternary layers (``qkeras_twin.py``)."""
