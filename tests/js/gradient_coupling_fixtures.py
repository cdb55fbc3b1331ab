"""GradientCoupling.compute and .terms on its own recorded batch, and the readout's sums and number
formats as Python writes them, for tests/js/gradient_coupling.test.mjs."""


from bnlab.widgets import GradientCoupling


def fixtures() -> dict:
    g = GradientCoupling()
    cases = []
    # the sliders' ends and the whole recorded batch (64), every pattern
    for batch_size, gamma in ((2, 1.0), (8, 1.0), (13, 0.1), (32, 3.0), (64, 1.7)):
        for pattern in g.PATTERNS:
            dx, dx_fixed, x_hat = g.compute(batch_size, pattern, gamma)
            own, mean, scale = g.terms(batch_size, pattern, gamma).values()
            dy = g.upstream(batch_size, pattern, x_hat)
            cases.append({"settings": {"batch_size": batch_size, "pattern": pattern, "gamma": gamma},
                          "x_hat": x_hat.tolist(), "dy": dy.tolist(), "dx": dx.tolist(), "dx_fixed": dx_fixed.tolist(),
                          "terms": {"own": own.tolist(), "mean": mean.tolist(), "scale": scale.tolist()},
                          "sums": {"dx": float(dx.sum()), "dxXhat": float((dx * x_hat).sum()),
                                   "fixed": float(dx_fixed.sum()), "own": float(own.sum()), "mean": float(mean.sum()),
                                   "scale": float(scale.sum())},
                          # the readout's one sum that is not a rounding error (the others are about 1e-16)
                          "readout_fixed": f"statistics fixed: Σ dx = {dx_fixed.sum():+.3f}"})
    numbers = (0.0, -0.0, 1.0, -1.0, 2.5e-17, -4.440892098500626e-16, 123456.789, -0.000123456, 0.1, 9.995, 1e20,
               -3.14159, 0.5, 7.0e-5, 12.0)
    formats = [[x, format(x, "+.2e"), format(x, "+.3g"), format(x, "+.3f")] for x in numbers]
    return {"gradient_coupling": {"data": dict(g.data), "cases": cases, "formats": formats,
                                  "names": [name.split(":")[0] for name in g.TERMS]}}
