"""The course plan: every lesson, the question it answers and the seed articles it draws on.

The index notebook renders this as the course map, linking the lessons that exist and marking the
others as coming, so the map cannot fall out of step with the notebooks folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Lesson", "LESSONS", "course_map", "notebook_path", "lesson_problems"]


@dataclass(frozen=True)
class Lesson:
    number: str      # "01" ... "13", or "H" for the homework
    stem: str        # notebook file name without .ipynb
    title: str
    question: str
    seeds: str       # which of the five seed articles the lesson corrects or extends
    minutes: str = ""  # its run time under nbval on the 2-core CPU machine that tests the course


LESSONS = (
    Lesson("00", "00_index", "Index", "What is in the course, and how do I run it?", "–", "2 s"),
    Lesson("01", "01_forward", "Forward", "What exactly does BN compute, per feature and per channel, and why γ, β and ε?", "003, all", "3 s"),
    Lesson("02", "02_backward", "Backward", "How do gradients flow through BN, and why do they sum to zero over the batch?", "003", "4 s"),
    Lesson("03", "03_train_vs_eval", "Train vs eval", "What are running statistics, and what breaks at inference time?", "000, 003", "5 s"),
    Lesson("04", "04_activation_distributions", "Activation distributions", "Do BN nets keep their activations stable? (Ioffe & Szegedy, Fig. 1)", "004", "23 s"),
    Lesson("05", "05_gradient_flow", "Gradient flow", "How do gradients move through deep nets with and without BN, and which learning rates work?", "001, 004", "16 s"),
    Lesson("06", "06_cnn_classification", "CNN classification", "How does BN work per channel in a conv net, and what does it cost at inference?", "001", "25 s"),
    Lesson("07", "07_segmentation", "Segmentation", "How does BN behave in an encoder–decoder that predicts masks?", "000", "19 s"),
    Lesson("08", "08_small_batches", "Small batches", "Why does BN fail with tiny batches (medical imaging), and what replaces it?", "002", "47 s"),
    Lesson("09", "09_why_bn_works", "Why BN works", "Internal covariate shift or a smoother loss landscape? (Santurkar et al.)", "004", "85 s"),
    Lesson("10", "10_regularization", "BN, dropout and regularization", "Is BN a regularizer? How do BN and dropout interact?", "000, 001, 002", "48 s"),
    Lesson("11", "11_recurrent_and_beyond", "Recurrent nets and beyond", "Why do RNNs and transformers use other normalizations?", "004", "49 s"),
    Lesson("12", "12_many_devices", "Many devices", "What happens to BN statistics across GPUs or processes (SyncBatchNorm)?", "–", "55 s"),
    Lesson("13", "13_myths_and_mistakes", "Myths and mistakes", "Which popular claims about BN are wrong, and how can we show it?", "all", "30 s"),
    Lesson("H", "homework/h1_forward_and_running_stats", "Homework H1–H4", "Forward and running statistics, backward, a torch module, BN in a real model: filled in by students, checked by `bnlab.homework`, which names the mistake", "000, 002, 003", "2–4 s each"),
)


def notebook_path(lesson: Lesson, notebook_dir: str | Path = ".") -> Path:
    return Path(notebook_dir) / f"{lesson.stem}.ipynb"


def course_map(notebook_dir: str | Path = ".") -> str:
    """The plan as a Markdown table; lessons whose notebook exists in notebook_dir are linked. CPU
    time: as measured under nbval on the 2-core machine that tests the course (allow two to three
    times that on a slow laptop; less on a GPU)."""
    rows = ["| # | lesson | question it answers | seeds | CPU time | status |", "|---|---|---|---|---|---|"]
    for lesson in LESSONS:
        exists = notebook_path(lesson, notebook_dir).exists()
        title = f"[{lesson.title}]({lesson.stem}.ipynb)" if exists else lesson.title
        rows.append(f"| {lesson.number} | {title} | {lesson.question} | {lesson.seeds} | {lesson.minutes or '–'} | "
                    f"{'ready' if exists else 'coming'} |")
    return "\n".join(rows)


def lesson_problems(path: str | Path) -> list[str]:
    """What keeps a committed lesson notebook from following the course pattern, as sentences
    (an empty list: none). Checked: learning goals in the first cell; a summary (or exercises) in
    one of the last three cells; every code cell executed, in order from 1; no error output.
    """
    path = Path(path)
    try:
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    except (OSError, ValueError, KeyError) as error:
        return [f"{path.name} is not a readable notebook ({error})"]
    problems = []
    text = ["".join(cell.get("source", "")) for cell in cells]
    if not cells or "learning goals" not in text[0].lower():
        problems.append(f"{path.name}: the first cell states no learning goals")
    if not any("summary" in t.lower() or "exercises" in t.lower() for t in text[-3:]):
        problems.append(f"{path.name}: no summary or exercises at the end")
    code = [cell for cell in cells if cell["cell_type"] == "code" and "".join(cell.get("source", "")).strip()]
    counts = [cell.get("execution_count") for cell in code]
    if counts != list(range(1, len(code) + 1)):
        problems.append(f"{path.name}: not executed top to bottom in one run (execution counts {counts[:6]}...)")
    errors = [i for i, cell in enumerate(code) if any(o.get("output_type") == "error" for o in cell.get("outputs", []))]
    if errors:
        problems.append(f"{path.name}: error output in code cell(s) {errors}")
    return problems
