"""Internal: what experiments, benchmarks and tests share, so that they never import each other.

- :mod:`~stepsize._reference.instances`: the papers' problem instances (Gaussian operators and
  Gram matrices, the Jacobi instance of Chebyshev-PSOR).
- :mod:`~stepsize._reference.dugd`: the DUGD notebook's printed steps and test MSE, the test MSE
  through the dense operator, the noisy deblurring problem and the best any T-step GD reaches.
- :mod:`~stepsize._reference.ista`: Bernoulli-Gaussian sparse recovery, ISTA/FISTA, NMSE in dB.
- :mod:`~stepsize._reference.prox_instances`: random prox instances and the author's timings.
- :mod:`~stepsize._reference.cvxpy_prox`: the CVXPY references of the prox and the Gaussian MLE.
- :mod:`~stepsize._reference.lsq_data`: the LSQ note's datasets and models.
- :mod:`~stepsize._reference.lsq_models`: the small ResNet of the LSQ bit-width reproduction.
- :mod:`~stepsize._reference.timing`: pinned BLAS threads, medians, peak memory.

Layering: ``_validation``, ``_results`` <- method subpackages <- ``_reference`` <- experiments,
benchmarks <- cli. Nothing in the method subpackages imports from here.
"""
