"""QONNX route (``route.py``): the whole student as QONNX, checked with qonnx's executor."""
