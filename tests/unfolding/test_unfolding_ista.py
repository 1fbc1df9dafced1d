"""UnfoldedISTA: ISTA at init (numpy and scikit-learn references), Chebyshev init, training."""

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

torch = pytest.importorskip("torch")

from stepsize._reference.ista import bernoulli_gaussian_problem, ista, nmse_db  # noqa: E402
from stepsize.chebyshev import chebyshev_steps  # noqa: E402
from stepsize.unfolding import UnfoldedISTA, soft_threshold, train_incremental  # noqa: E402


def numpy_ista(A, y, lam, steps):
    """Reference on one column vector: x <- soft(x + g A^T (y - A x), g lam)."""
    x = np.zeros(A.shape[1])
    for gamma in steps:
        v = x + gamma * A.T @ (y - A @ x)
        x = np.sign(v) * np.maximum(np.abs(v) - gamma * lam, 0)
    return x


@pytest.fixture(scope="module")
def sparse_problem():
    A, draw, _ = bernoulli_gaussian_problem(60, 30, 0.1, 40.0, 3)
    return A, draw


@pytest.mark.parametrize("form", ["dense", "sparse", "linear_operator"])
@pytest.mark.parametrize("learn_thresholds", [False, True])
def test_at_init_it_is_plain_ista(sparse_problem, form, learn_thresholds):
    A, draw = sparse_problem
    x, y = draw(5)
    operator = {"dense": A, "sparse": sp.csr_matrix(A),
                "linear_operator": spla.aslinearoperator(A)}[form]
    model = UnfoldedISTA(7, operator, lam=0.05, learn_thresholds=learn_thresholds)
    L = np.linalg.eigvalsh(A.T @ A)[-1]
    assert model.lipschitz == pytest.approx(L, rel=1e-12)
    np.testing.assert_allclose(model.step_sizes.numpy(), np.full(7, 1 / L), rtol=1e-12)
    np.testing.assert_allclose(model.threshold_values.numpy(), np.full(7, 0.05 / L),
                               rtol=1e-12)
    want = np.stack([numpy_ista(A, row, 0.05, np.full(7, 1 / L)) for row in y])
    with torch.no_grad():
        got = model(y).numpy()
        single = model(y[0], n_steps=3).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(single, numpy_ista(A, y[0], 0.05, np.full(3, 1 / L)),
                               rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got, ista(A, y, 0.05, 7), rtol=1e-12, atol=1e-14)


def test_many_layers_reach_the_lasso_solution_of_scikit_learn(sparse_problem):
    from sklearn.linear_model import Lasso

    A, draw = sparse_problem
    _, y = draw(2)
    lam = 0.02
    model = UnfoldedISTA(3000, A, lam=lam)
    with torch.no_grad():
        got = model(y).numpy()
    solver = Lasso(alpha=lam / A.shape[0], fit_intercept=False, tol=1e-12, max_iter=10**6)
    want = np.stack([solver.fit(A, row).coef_.copy() for row in y])
    np.testing.assert_allclose(got, want, atol=1e-7)


def test_chebyshev_init_and_explicit_steps():
    A = np.random.default_rng(1).normal(size=(20, 10))
    eigenvalues = np.linalg.eigvalsh(A.T @ A)
    model = UnfoldedISTA(5, A, lam=0.1, init="chebyshev")
    np.testing.assert_allclose(model.step_sizes.numpy(),
                               chebyshev_steps(eigenvalues[0], eigenvalues[-1], 5), rtol=1e-10)
    # A^T A of a 30 x 60 matrix is singular: the default interval starts at its smallest
    # positive eigenvalue
    wide = np.random.default_rng(0).normal(size=(10, 20))
    spectrum = np.linalg.eigvalsh(wide.T @ wide)
    model = UnfoldedISTA(4, wide, lam=0.1, init="chebyshev", learn_thresholds=True)
    np.testing.assert_allclose(model.step_sizes.numpy(),
                               chebyshev_steps(spectrum[10], spectrum[-1], 4), rtol=1e-9)
    np.testing.assert_allclose(model.threshold_values.numpy(), 0.1 * model.step_sizes.numpy())
    model = UnfoldedISTA(4, wide, lam=0.1, init="chebyshev", chebyshev_interval=(1.0, 50.0))
    np.testing.assert_allclose(model.step_sizes.numpy(), chebyshev_steps(1.0, 50.0, 4))
    np.testing.assert_allclose(UnfoldedISTA(2, wide, 0.1, init=[0.1, -0.2]).step_sizes.numpy(),
                               [0.1, 0.2])


def test_soft_threshold_is_the_l1_prox():
    """prox of t|.|: argmin_u (u - v)^2 / 2 + t |u|, checked on a fine grid."""
    v = torch.linspace(-3, 3, 13, dtype=torch.float64)
    grid = torch.linspace(-4, 4, 80001, dtype=torch.float64)
    objective = (grid[None, :] - v[:, None]).square() / 2 + 0.7 * grid.abs()[None, :]
    want = grid[objective.argmin(dim=1)]
    np.testing.assert_allclose(soft_threshold(v, 0.7).numpy(), want.numpy(), atol=1e-4)


@pytest.mark.parametrize("learn_thresholds", [False, True])
def test_training_lowers_the_test_error(sparse_problem, learn_thresholds):
    A, draw = sparse_problem
    train, (x_test, y_test) = draw(1000), draw(500)
    model = UnfoldedISTA(5, A, lam=0.05, learn_thresholds=learn_thresholds)
    with torch.no_grad():
        before = nmse_db(model(y_test).numpy(), x_test)
    result = train_incremental(model, data=train, batch_size=200, steps_per_generation=40,
                               lr=0.01, seed=0, progress=False)
    with torch.no_grad():
        after = nmse_db(model(y_test).numpy(), x_test)
    assert before == pytest.approx(nmse_db(ista(A, y_test, 0.05, 5), x_test), abs=1e-9)
    # plain ISTA at 5 layers: about -2.7 dB; learned steps gain 1.1-1.4 dB, with thresholds ~5 dB
    assert after < before - (3.0 if learn_thresholds else 1.0)
    assert result.info["spectral_radius"] is None and len(result.losses) == 5
    assert (result.info["thresholds"] is not None) and result.info["thresholds"].shape == (5,)
    if not learn_thresholds:
        np.testing.assert_allclose(result.info["thresholds"], 0.05 * result.steps)


def test_learned_thresholds_are_checkpointed(tmp_path, sparse_problem):
    A, draw = sparse_problem
    data = draw(200)
    path = tmp_path / "ista.pt"

    def train(**kwargs):
        model = UnfoldedISTA(3, A, lam=0.05, learn_thresholds=True)
        return train_incremental(model, data=data, batch_size=50, steps_per_generation=5,
                                 lr=0.01, seed=1, progress=False, **kwargs)

    whole = train()
    with pytest.raises(KeyboardInterrupt):
        train(checkpoint=path, callback=_interrupt_at(1))
    resumed = train(checkpoint=path, resume=True)
    np.testing.assert_array_equal(resumed.steps, whole.steps)
    np.testing.assert_array_equal(resumed.info["thresholds"], whole.info["thresholds"])
    with pytest.raises(ValueError, match="lam is 0.05 there but 0.1 here"):
        train_incremental(UnfoldedISTA(3, A, lam=0.1, learn_thresholds=True), data=data,
                          batch_size=50, steps_per_generation=5, lr=0.01, seed=1,
                          progress=False, checkpoint=path, resume=True)


def _interrupt_at(generation):
    def callback(progress):
        if progress.round == generation:
            raise KeyboardInterrupt

    return callback


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((0, np.eye(2), 0.1), {}, ValueError, "T must be >= 1"),
        ((2, np.eye(2), -0.1), {}, ValueError, "lam must be >= 0"),
        ((2, np.eye(2), 0.1), dict(init="fista"), ValueError, "init must be one of"),
        ((2, np.eye(2), 0.1), dict(init=[1.0]), ValueError, "init"),
        ((2, np.eye(2), 0.1), dict(learn_thresholds=1), TypeError, "learn_thresholds must be"),
        ((2, np.zeros((2, 2)), 0.1), {}, ValueError, "operator must not be zero"),
        ((2, np.eye(2), 0.1), dict(init="chebyshev", chebyshev_interval=(2.0, 1.0)),
         ValueError, r"chebyshev_interval\[1\] must be >= 2"),
        ((2, np.eye(2), 0.1), dict(init="chebyshev", chebyshev_interval=3.0),
         ValueError, "chebyshev_interval must be a pair"),
    ],
)
def test_bad_arguments(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        UnfoldedISTA(*args, **kwargs)


def test_ista_needs_data_and_the_expected_loss_is_for_gd():
    from stepsize.unfolding import train_expected_loss

    model = UnfoldedISTA(2, np.eye(3), 0.1)
    with pytest.raises(ValueError, match="data must be given for an UnfoldedISTA"):
        train_incremental(model, progress=False)
    with pytest.raises(TypeError, match="model must be an UnfoldedGD"):
        train_expected_loss(model)
    with pytest.raises(ValueError, match=r"y must have shape \(3,\) or \(batch, 3\)"):
        model(np.ones(4))
