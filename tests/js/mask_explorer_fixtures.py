"""MaskExplorer's data and what the view must paint of it, for tests/js/mask_explorer.test.mjs: the
class ids from the arrays themselves, the pixels' colours from what bnlab.plots.plot_masks' images
map them to (matplotlib's colour maps), the readout from the scores given."""

import matplotlib
import numpy as np

matplotlib.use("Agg")

from bnlab import plots  # noqa: E402
from bnlab.widgets import MaskExplorer  # noqa: E402


def fixtures() -> dict:
    rng = np.random.default_rng(3)
    n, h, w, classes = 5, 4, 7, ("background", "disc", "square")
    images = rng.normal(size=(n, 1, h, w)) * 2.5 - 4
    masks = rng.integers(0, 3, (n, h, w))
    steps = (0, 25, 50)
    snapshots = {name: {s: rng.integers(0, 3, (n, h, w)) for s in steps} for name in ("plain_he", "bn")}
    scores = {"bn": {0: 0.0, 25: 0.61234, 50: 0.9}, "plain_he": {0: 0.125, 50: 0.5}}
    e = MaskExplorer(images, masks, snapshots, classes, scores)
    # what plot_masks paints: RGBA bytes of every panel, the grey images from the original values
    fig = plots.plot_masks(images, masks, {"bn": masks}, classes, n=n)
    grid = np.array(fig.axes).reshape(n, 3)
    grey = [grid[i][0].images[0].to_rgba(images[i, 0], bytes=True).ravel().tolist() for i in range(n)]
    coloured = grid[0][1].images[0]
    ids = np.arange(len(classes))
    colours = coloured.to_rgba(ids, bytes=True)
    paint = [{"ids": m.ravel().tolist(), "rgba": coloured.to_rgba(m, bytes=True).ravel().tolist()}
             for m in (masks[0], snapshots["bn"][25][3])]
    views = []
    for step, first in ((50, 0), (0, 2), (25, 1)):
        titles = e.figure(step=step, first=first)._suptitle.get_text()
        views.append({"step": step, "first": first, "stepIndex": steps.index(step),
                      "images": list(range(first, first + 3)), "title": titles,
                      "scores": {name: scores[name].get(step) for name in snapshots},
                      "header": [f"step {step}", "test mean IoU"],
                      "rows": {plots.LABELS[name]: [f"{scores[name][step]:.3f}" if step in scores[name] else "–"]
                               for name in snapshots}})
    return {"masks": {"data": e.data, "truth": masks.reshape(n, -1).tolist(),
                      "predictions": {name: [snapshots[name][s].reshape(n, -1).tolist() for s in steps]
                                      for name in snapshots},
                      "grey": grey, "paint": paint, "class_rgba": colours.tolist(), "views": views}}
