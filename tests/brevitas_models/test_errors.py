"""The models' error type and how the flow treats it (issue 14 item 1).

The models raise :class:`brevitas_models.errors.ModelInputError` (they import nothing from the
flow); the flow's ``UserError`` subclasses it, and the ``tatvpr`` CLI prints either as one
``error:`` line with exit status 2.
"""

from __future__ import annotations

import pytest
import yaml

from brevitas_models.errors import ModelInputError
from tatvpr_hw.cli import main
from tatvpr_hw.errors import UserError


def test_user_error_is_a_model_input_error():
    assert issubclass(UserError, ModelInputError) and issubclass(ModelInputError, ValueError)
    assert not issubclass(ModelInputError, UserError)


def test_cli_prints_a_model_error_as_one_line_and_exits_2(tmp_path, capsys):
    """A head override the head does not take is found by brevitas_models.heads.create_head."""
    cfg = yaml.safe_load(open("configs/tiny.yaml"))
    cfg["model"]["head"] = {"name": "boq", "preset": "tiny", "overrides": {"bogus": 1}}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    code = main(["footprint", "--config", str(path)])
    err = [line for line in capsys.readouterr().err.splitlines()
           if line.strip() and not line.startswith(("W1", "I1", "INFO", "WARNING"))]
    assert code == 2
    assert err == ["error: head 'boq': unknown override(s) 'bogus'; allowed arguments are proj_channels, "
                   "num_queries, num_layers, row_dim, num_heads (in_dim and grid_hw come from the backbone)"]


def test_sparsity_list_turns_the_models_error_into_the_flags_message():
    from tatvpr_hw.commands.models import parse_sparsities

    with pytest.raises(UserError, match=r"^--sparsity: 1.5 is outside \[0, 1\)"):
        parse_sparsities("0.5,1.5")
