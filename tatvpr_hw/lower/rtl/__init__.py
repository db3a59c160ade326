"""RTL route (``flow.py``): the packed-ternary tile in ``rtl/`` under Verilator, yosys and
nextpnr-ice40 - cycle witness of the simulator, resources, and a real iCE40 bitstream."""
