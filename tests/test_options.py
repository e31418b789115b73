"""Each `lort fit` option is declared once (lort.options) and read by the command line, the
config loader and the validator; an error names an option as its caller spells it."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import pytest

import lort
from cli_helpers import flat, run_cli
from lort.cli.commands import fit as fit_command
from lort.config import resolve
from lort.errors import OptionError
from lort.methods import get_method, make_loss
from lort.options import FIT_OPTIONS, flag_of


def _params() -> dict[str, click.Parameter]:
    return {p.name: p for p in fit_command.params if p.name is not None}


def test_every_option_is_a_flag_of_fit_with_its_declared_choices_and_bounds() -> None:
    params = _params()
    for o in FIT_OPTIONS:
        p = params[o.key]
        assert o.cli in p.opts, (o.key, p.opts)
        if o.choices:
            assert isinstance(p.type, click.Choice)
            assert tuple(p.type.choices) == o.choices
        if o.minimum is not None:
            assert isinstance(p.type, click.IntRange) and p.type.min == o.minimum
            assert p.type.max == o.maximum
        assert (p.help or "") == o.help


def test_a_config_file_is_checked_against_the_declared_kinds_and_choices() -> None:
    with pytest.raises(lort.InputError, match="workers must be an integer"):
        resolve({"workers": "two"}, {})
    for o in FIT_OPTIONS:
        if o.choices:
            with pytest.raises(OptionError, match=f"^{o.key} must be") as e:
                resolve({o.key: "no-such-choice"}, {})
            assert e.value.options == (o.key,)


def test_an_option_error_names_the_parameter_in_python_and_the_flag_on_the_command_line(
    tmp_path: Path,
) -> None:
    with pytest.raises(OptionError) as e:
        resolve({"stage2_stop": "val", "stage2_mode": "live"}, {})
    assert str(e.value).startswith("stage2_stop val scores")
    assert "stage2_mode cached" in str(e.value)
    assert e.value.spelled(flag_of).startswith("--stage2-stop val scores")

    config = tmp_path / "c.yaml"
    config.write_text("stage2_stop: val\nstage2_mode: live\n")
    result = run_cli("fit", "--config", config, "--out", tmp_path / "r")
    assert result.exit_code == 1
    err = flat(result.output)
    assert "--stage2-stop val scores" in err and "--stage2-mode cached" in err
    assert not (tmp_path / "r").exists()

    with pytest.raises(lort.InputError, match=r"^smooth must lie in \[0, 1\)"):
        lort.fit(tmp_path / "api", smooth=2.0)


def test_the_methods_name_their_parameters() -> None:
    with pytest.raises(OptionError, match=r"^smooth applies to LORT only") as e:
        make_loss(get_method("ce"), np.array([5, 3, 1]), smooth=0.5)
    assert "--smooth applies" in e.value.spelled(flag_of)
    with pytest.raises(OptionError, match="choose method from"):
        get_method("no-such-method")
