"""The shared input checks: accepted values, canonical outputs and messages naming the argument."""

import numpy as np
import pytest
import scipy.sparse as sp

from stepsize._validation import (
    check_array,
    check_choice,
    check_int,
    check_positive_definite,
    check_real,
    check_rng,
    check_square,
    check_symmetric,
)


def test_check_real_bounds_and_conversion():
    assert check_real(np.float32(0.5), "alpha", low=0, high=1) == 0.5
    assert check_real(np.array(2.0), "x") == 2.0
    assert check_real(1, "x") == 1.0
    with pytest.raises(ValueError, match=r"alpha must be > 0, got 0.0"):
        check_real(0.0, "alpha", low=0, low_inclusive=False)
    with pytest.raises(ValueError, match=r"alpha must be <= 1, got 1.5"):
        check_real(1.5, "alpha", high=1)
    with pytest.raises(ValueError, match="sigma must be finite"):
        check_real(float("nan"), "sigma")
    with pytest.raises(TypeError, match="sigma must be a real number"):
        check_real("1", "sigma")
    with pytest.raises(TypeError, match="flag"):
        check_real(True, "flag")


def test_check_int():
    assert check_int(np.int64(4), "T", low=1) == 4
    with pytest.raises(ValueError, match="T must be >= 1, got 0"):
        check_int(0, "T", low=1)
    with pytest.raises(ValueError, match="bits must be <= 16, got 17"):
        check_int(17, "bits", high=16)
    with pytest.raises(TypeError, match="T must be an integer"):
        check_int(2.0, "T")


def test_check_choice():
    assert check_choice("a", "mode", ["a", "b"]) == "a"
    with pytest.raises(ValueError, match="mode must be one of 'a', 'b'; got 'c'"):
        check_choice("c", "mode", ["a", "b"])


def test_check_array_shapes_and_values():
    out = check_array([[1, 2], [3, 4]], "W", ndim=2)
    assert out.dtype == np.float64 and out.shape == (2, 2)
    assert check_array(np.ones(3, np.float32), "v", dtype=None).dtype == np.float32
    with pytest.raises(ValueError, match=r"y must have shape \(3,\), got \(2,\)"):
        check_array([1, 2], "y", shape=(3,))
    with pytest.raises(ValueError, match=r"X must have shape \(\*, 2\)"):
        check_array(np.ones((2, 3)), "X", shape=(None, 2))
    with pytest.raises(ValueError, match="W must have 2 dimensions"):
        check_array([1, 2], "W", ndim=2)
    with pytest.raises(ValueError, match="v must be finite, but it has 1 NaN"):
        check_array([1.0, np.nan], "v")
    with pytest.raises(ValueError, match="v must be finite, but it has 2"):
        check_array([np.inf, -np.inf], "v")
    with pytest.raises(ValueError, match="must not be empty"):
        check_array([], "v")
    with pytest.raises(TypeError, match="v must be numeric"):
        check_array(["a"], "v")
    with pytest.raises(TypeError, match="v must be real"):
        check_array([1j], "v")
    with pytest.raises(TypeError, match="v must be an array, got None"):
        check_array(None, "v")
    assert check_array([], "v", allow_empty=True).size == 0


def test_check_array_accepts_torch():
    torch = pytest.importorskip("torch")
    out = check_array(torch.ones(2, 3), "X", ndim=2)
    assert isinstance(out, np.ndarray) and out.shape == (2, 3)


def test_symmetry_square_and_definiteness():
    check_symmetric(np.array([[2.0, 1.0], [1.0, 2.0]]), "W")
    check_symmetric(sp.csr_array(np.array([[2.0, 1.0], [1.0, 2.0]])), "W")
    with pytest.raises(ValueError, match="W must be symmetric"):
        check_symmetric(np.array([[2.0, 1.0], [0.0, 2.0]]), "W")
    with pytest.raises(ValueError, match="W must be symmetric"):
        check_symmetric(sp.csr_array(np.array([[2.0, 1.0], [0.0, 2.0]])), "W")
    with pytest.raises(ValueError, match=r"X must be a square matrix, got shape \(2, 3\)"):
        check_square(np.ones((2, 3)), "X")
    check_positive_definite(np.eye(3), "S")
    check_positive_definite(np.diag([1.0, 0.0]), "S", semi=True)
    with pytest.raises(ValueError, match="S must be positive definite, but its smallest eigenvalue"
                                         " is -1"):
        check_positive_definite(np.diag([1.0, -1.0]), "S")
    with pytest.raises(ValueError, match="positive semidefinite"):
        check_positive_definite(np.diag([1.0, -1e-3]), "S", semi=True)


def test_check_rng():
    assert check_rng(3).integers(1000) == np.random.default_rng(3).integers(1000)
    generator = np.random.default_rng(0)
    assert isinstance(check_rng(generator), np.random.Generator)
    with pytest.raises(TypeError, match="seed"):
        check_rng("x")
    with pytest.raises(ValueError, match="seed must be non-negative"):
        check_rng(-1)


def test_meta_tensors_are_refused_by_name():
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="X is a tensor on the meta device"):
        check_array(torch.empty(3, 3, device="meta"), "X")
