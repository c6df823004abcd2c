"""Published zero-shot rows of the smallest public models, to set our scores beside.

Values as the papers print them: accuracies in percent, LAMBADA perplexity as is.
Each task is scored by the metric the papers report (``tasks.ZeroShotTask.headline``):
acc_norm for HellaSwag, ARC-Challenge and OpenBookQA, acc for the rest, and LAMBADA's
perplexity beside its acc.

Sources:
- [R] Peng et al. 2023, "RWKV: Reinventing RNNs for the Transformer Era",
  arXiv:2305.13048 (v1/v2), Tables 3-4. SciQ is carried for RWKV-4 169M only (ReCoRD,
  62.03 there, is not one of our eight tasks).
- [M] Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces",
  arXiv:2312.00752, Table 3 (no OpenBookQA column).
- [M2] Dao & Gu 2024, "Transformers are SSMs" (Mamba-2), arXiv:2405.21060, Table 10: the
  OpenBookQA values of the [M] rows.

The two papers disagree on Pythia-160M's LAMBADA (ppl 24.38 / acc 38.97 in [R], 38.10 /
33.0 in [M]), and their other Pythia numbers differ a little too: each row keeps its
own paper's values. Parameter counts are the nominal ones in the model names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType

RWKV_PAPER = "Peng et al. 2023, RWKV, arXiv:2305.13048, Tables 3-4"
MAMBA_PAPER = (
    "Gu & Dao 2023, Mamba, arXiv:2312.00752, Table 3; OpenBookQA from Dao & Gu 2024, "
    "Mamba-2, arXiv:2405.21060, Table 10"
)


@dataclasses.dataclass(frozen=True)
class PublishedRow:
    model: str  # as the paper names it
    family: str  # "rwkv4", "pythia" or "mamba"
    params: float  # nominal parameter count
    source: str
    scores: Mapping[str, Mapping[str, float]]  # task -> metric -> value, read-only


def _row(
    model, family, params, source, lambada, hellaswag, piqa, arc_e, arc_c, wino, obqa, sciq=None
):
    """A row from the table's columns in its order; ``lambada`` = (ppl, acc)."""
    ppl, acc = lambada
    scores = {
        "lambada_openai": {"ppl": ppl, "acc": acc},
        "hellaswag": {"acc_norm": hellaswag},
        "piqa": {"acc": piqa},
        "arc_easy": {"acc": arc_e},
        "arc_challenge": {"acc_norm": arc_c},
        "winogrande": {"acc": wino},
        "openbookqa": {"acc_norm": obqa},
    }
    if sciq is not None:
        scores["sciq"] = {"acc": sciq}
    frozen = MappingProxyType({task: MappingProxyType(m) for task, m in scores.items()})
    return PublishedRow(model, family, params, source, frozen)


# columns: LAMBADA (ppl, acc), HellaSwag, PIQA, ARC-e, ARC-c, WinoGrande, OBQA[, SciQ]
ROWS: tuple[PublishedRow, ...] = (
    _row("RWKV-4 169M", "rwkv4", 169e6, RWKV_PAPER,
         (29.33, 32.99), 32.26, 65.07, 47.47, 24.15, 50.83, 29.60, sciq=77.50),
    _row("Pythia 160M", "pythia", 160e6, RWKV_PAPER,
         (24.38, 38.97), 31.63, 62.68, 45.12, 23.81, 52.01, 29.20),
    _row("RWKV-4 430M", "rwkv4", 430e6, RWKV_PAPER,
         (13.04, 45.16), 40.90, 67.52, 52.86, 25.17, 51.14, 32.40),
    _row("Pythia 410M", "pythia", 410e6, RWKV_PAPER,
         (11.58, 50.44), 39.10, 66.70, 50.38, 25.77, 53.35, 30.00),
    _row("Pythia-160M", "pythia", 160e6, MAMBA_PAPER,
         (38.10, 33.0), 30.2, 61.4, 43.2, 24.1, 51.9, 29.2),
    _row("Mamba-130M", "mamba", 130e6, MAMBA_PAPER,
         (16.07, 44.3), 35.3, 64.5, 48.0, 24.3, 51.9, 28.8),
    _row("Pythia-410M", "pythia", 410e6, MAMBA_PAPER,
         (10.84, 51.4), 40.6, 66.9, 52.1, 24.6, 53.8, 30.0),
    _row("Mamba-370M", "mamba", 370e6, MAMBA_PAPER,
         (8.14, 55.6), 46.5, 69.5, 55.1, 28.0, 55.3, 30.8),
)  # fmt: skip
