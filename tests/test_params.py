"""Parameter declarations: validation, kernel arrays and CLI parsing."""
import numpy as np
import pytest

from neurotwin_dash.params import ParamError, ParamSet, ParamSpec

PS = ParamSet([
    ParamSpec("A", 3.25, 2.0, 10.0, "mV", "excitatory gain"),
    ParamSpec("b", 50.0, 25.0, 100.0, "1/s", "inhibitory rate"),
], owner="toy")


def test_out_of_range_value_names_parameter_and_range():
    with pytest.raises(ParamError, match=r"parameter 'A' in toy = 12 is outside the allowed range \[2, 10\] mV"):
        PS.validate({"A": 12})


def test_unknown_name_lists_known_names():
    with pytest.raises(ParamError, match=r"unknown parameter 'Z' for toy; known: A, b"):
        PS.validate({"Z": 1})


def test_non_finite_is_refused():
    with pytest.raises(ParamError, match="must be finite"):
        PS.validate({"A": np.nan})


def test_default_outside_bounds_is_a_declaration_error():
    with pytest.raises(ParamError, match="declared default"):
        ParamSpec("x", 5, 0, 1)


def test_to_array_broadcasts_scalars_batches_and_regions():
    arr = PS.to_array({"A": [3.0, 4.0, 5.0]}, n_region=2)
    assert arr.shape == (3, 2, 2)
    np.testing.assert_array_equal(arr[:, 0, 0], [3, 4, 5])
    np.testing.assert_array_equal(arr[:, 1, :], 50.0)
    per_region = PS.to_array({"b": [30.0, 40.0, 60.0, 70.0]}, n_batch=2, n_region=4)
    np.testing.assert_array_equal(per_region[1, 1], [30, 40, 60, 70])
    full = PS.to_array({"A": np.full((2, 4), 6.0)}, n_region=4)
    assert full.shape == (2, 2, 4) and np.all(full[:, 0] == 6.0)
    with pytest.raises(ParamError, match=r"parameter 'A' has shape \(5,\)"):
        PS.to_array({"A": np.full(5, 3.0)}, n_batch=2, n_region=4)


def test_parse_assignments_from_cli():
    assert PS.parse_assignments(["A=4", "b = 60"]) == {"A": 4.0, "b": 60.0}
    with pytest.raises(ParamError, match="'A': 'x' is not a number"):
        PS.parse_assignments(["A=x"])
    with pytest.raises(ParamError, match="expected name=value"):
        PS.parse_assignments(["A"])


def test_label_carries_the_unit():
    assert PS["A"].label == "A (mV)"
