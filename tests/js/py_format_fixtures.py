"""Python's own formatting of some numbers, for tests/js/py_format.test.mjs (bn.js's pyFixed, pyExp)."""


def fixtures() -> dict:
    values = (0.0, -0.0004, 1.2345, -12.3456, 0.045512, 1e-12, 123456.0, 9.995, -3.14159, 0.3125, 0.125, -0.375,
              2.5, 0.0625, 1.125, -1.375e-7, 4.55e-2, 0.5, 1.5, float("inf"), float("-inf"))
    return {"py_format": {
        "cases": [[x if abs(x) < float("inf") else str(x), {d: [f"{x:.{d}f}", f"{x:.{d}e}"] for d in (0, 2, 3)}]
                  for x in values],
        "nan": [f"{float('nan'):.3f}", f"{float('nan'):.2e}"]}}
