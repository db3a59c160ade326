"""The board vocabulary lives in :mod:`tatvpr_hw.boards` (below the CLI, so the exporters use it
without importing the command layer); this name is kept for existing imports."""

from tatvpr_hw.boards import BOARDS, TOOL_NAMES, board_name, tool_board

__all__ = ["BOARDS", "TOOL_NAMES", "board_name", "tool_board"]
