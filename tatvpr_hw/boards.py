"""The one board vocabulary of the flow: the lower-case names of ``sim/boards/`` (``kv260``,
``zcu104``, ``pynq_z2``), also what ``tatvpr dse`` writes into ``best_point.json``.

Each tool spells its boards its own way (FINN: ``KV260_SOM``; the HLS board flow and
``hls/boards.yaml``: ``pynq-z2``). Commands take the project's name and map it here; a tool's
own spelling is accepted on input too, so an old command line keeps working.
"""

from __future__ import annotations

from tatvpr_hw.errors import UserError

BOARDS = ("kv260", "zcu104", "pynq_z2")

# board -> each tool's name for it
TOOL_NAMES: dict[str, dict[str, str]] = {
    "finn": {"kv260": "KV260_SOM", "zcu104": "ZCU104", "pynq_z2": "Pynq-Z2"},
    "hls": {"kv260": "kv260", "zcu104": "zcu104", "pynq_z2": "pynq-z2"},
}


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


_ALIASES = {_key(tool_name): board for names in TOOL_NAMES.values() for board, tool_name in names.items()}
_ALIASES.update({b: b for b in BOARDS})


def board_name(value: str, option: str = "--board") -> str:
    """The project's name of a board given in any known spelling; UserError naming the allowed ones."""
    board = _ALIASES.get(_key(value)) if isinstance(value, str) else None
    if board is None:
        raise UserError(f"unknown board {value!r} ({option}); allowed: {', '.join(BOARDS)}")
    return board


def tool_board(value: str, tool: str, option: str = "--board") -> str:
    """The name ``tool`` (``finn`` or ``hls``) uses for the board ``value`` (any known spelling)."""
    return TOOL_NAMES[tool][board_name(value, option)]
