"""The plan of the synthetic corpus: the real corpus's numbers and who says what, where.

`counts` reproduces the real IEMOCAP_full_release's 10,039 utterances with the exact 4-class counts
per session, label and speaker of the real corpus (and its other codes, odd transcript lines and
the two utterances without ForcedAlignment files; docs/architecture.md §7); `demo` deals a balanced four-class plan plus a few
other codes. Sphinx frames are 10 ms and, as in the real corpus, carry a 2-frame delay.
"""

from __future__ import annotations

import numpy as np

from emofuse.audio import SAMPLE_RATE

SR = SAMPLE_RATE
UNIT = SR // 100  # samples per 10 ms Sphinx frame
DELAY = 2  # frames: seconds = (frame + 2) / 100
FOUR = ("neu", "hap", "sad", "ang")

# ---------------------------------------------------------------- real-corpus numbers (the real corpus)
# session -> (ang, hap+exc, sad, neu); speaker -> 4-class total
COUNTS_4 = {
    1: (229, 278, 194, 384),
    2: (137, 327, 197, 362),
    3: (240, 286, 305, 320),
    4: (327, 303, 143, 258),
    5: (170, 442, 245, 384),
}
SPEAKER_4 = {
    (1, "F"): 528, (1, "M"): 557, (2, "F"): 481, (2, "M"): 542, (3, "F"): 522,
    (3, "M"): 629, (4, "F"): 528, (4, "M"): 503, (5, "F"): 590, (5, "M"): 651,
}  # fmt: skip
HAP_TOTAL = 595  # of the 1,636 hap+exc, the rest are exc
OTHER_CODES = {"xxx": 2507, "fru": 1849, "sur": 107, "fea": 40, "oth": 3, "dis": 2}
GENDER_TOTAL = {"F": 4800, "M": 5239}
N_UNTIMED, N_XX = 152, 48  # the 200 odd transcript lines
UNALIGNED = ("Ses03M_impro03_M001", "Ses03F_impro07_M030")  # no ForcedAlignment files


def dialog_names(session: int) -> list[str]:
    """The session's dialogs: 28/30/32/30/31, irregular names included (the real corpus)."""
    names = []
    for letter in "FM":
        base = f"Ses{session:02d}{letter}"
        impros = [f"impro{i:02d}" for i in range(1, 9)]
        if session == 1:
            impros.remove("impro08")
        if session == 3 and letter == "M":
            impros = [i for i in impros if i not in ("impro05", "impro08")]
            impros += ["impro05a", "impro05b", "impro08a", "impro08b"]
        scripts = ["script01_1", "script01_2", "script01_3", "script02_1", "script02_2"]
        scripts += ["script03_1", "script03_2"]
        if session == 5 and letter == "M":
            scripts.append("script01_1b")
        names += [f"{base}_{n}" for n in sorted(impros) + scripts]
    return names


def split(total: int, weights: list[float]) -> list[int]:
    """Integers proportional to `weights` that sum exactly to `total` (largest remainders)."""
    w = np.asarray(weights, dtype=float)
    raw = total * w / w.sum()
    out = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - out), kind="stable")[: total - out.sum()]:
        out[i] += 1
    return out.tolist()


def label_plan(
    profile: str, rng: np.random.Generator, per_speaker: int, others: int
) -> dict[tuple[int, str], list[str]]:
    """(session, letter) -> shuffled list of corpus codes for that speaker."""
    plan: dict[tuple[int, str], list[str]] = {}
    if profile == "demo":
        other_cycle = ["xxx", "fru", "xxx", "sur", "fru", "xxx", "fea", "oth", "xxx", "dis"]
        k = 0
        for s in range(1, 6):
            for g in "FM":
                codes = [FOUR[i % 4] for i in range(per_speaker)]
                # ~40 % of the happy class is "exc", as in the real corpus (hap 595 / exc 1,041)
                happy = [i for i, c in enumerate(codes) if c == "hap"]
                for i in happy[::2]:
                    codes[i] = "exc"
                for _ in range(others):
                    codes.append(other_cycle[k % len(other_cycle)])
                    k += 1
                plan[(s, g)] = [str(c) for c in rng.permutation(codes)]
        return plan
    # counts: exact 4-class table per session and label, split over the two speakers
    hap_by_session = split(HAP_TOTAL, [COUNTS_4[s][1] for s in range(1, 6)])
    others_by = {
        g: split(GENDER_TOTAL[g] - sum(SPEAKER_4[(s, g)] for s in range(1, 6)), [1] * 5)
        for g in "FM"
    }
    pool = [c for c, n in OTHER_CODES.items() for _ in range(n)]
    pool = [str(c) for c in rng.permutation(pool)]
    for s in range(1, 6):
        ang, hapexc, sad, neu = COUNTS_4[s]
        f_share = SPEAKER_4[(s, "F")]
        per_label = {}
        for lab, n in (("ang", ang), ("hapexc", hapexc), ("sad", sad), ("neu", neu)):
            per_label[lab] = split(n, [f_share, sum(COUNTS_4[s]) - f_share])
        # fix the per-speaker totals exactly: move the rounding difference through "neu"
        diff = f_share - sum(v[0] for v in per_label.values())
        per_label["neu"] = [per_label["neu"][0] + diff, per_label["neu"][1] - diff]
        hap_split = split(hap_by_session[s - 1], per_label["hapexc"])
        for gi, g in enumerate("FM"):
            n_hap = hap_split[gi]
            codes = ["ang"] * per_label["ang"][gi] + ["sad"] * per_label["sad"][gi]
            codes += ["neu"] * per_label["neu"][gi] + ["hap"] * n_hap
            codes += ["exc"] * (per_label["hapexc"][gi] - n_hap)
            n_other = others_by[g][s - 1]
            codes += pool[:n_other]
            pool = pool[n_other:]
            plan[(s, g)] = [str(c) for c in rng.permutation(codes)]
    return plan


def share(total: int, session: int, d_idx: int, n_dialogs: int, sessions) -> int:
    """How many of `total` odd lines dialog `d_idx` of `session` gets (spread evenly)."""
    sessions = list(sessions)
    if session not in sessions:
        return 0
    per_session = split(total, [1] * len(sessions))[sessions.index(session)]
    return split(per_session, [1] * n_dialogs)[d_idx]


def unaligned_ids(session: int, items: dict[str, list[tuple[str, str]]]) -> set[str]:
    """The ids written without alignment files: the real corpus's two (a 4-class one and another)
    or, in a small corpus where those turns do not exist, turn 000 of the same dialogs. Their
    labels are made 4-class / not 4-class by swapping codes with another utterance of the same
    speaker, so every count stays exact."""
    chosen: set[str] = set()
    if session != 3:
        return chosen
    four = set(FOUR) | {"exc"}
    for utt_id, want_four in zip(UNALIGNED, (True, False), strict=True):
        dialog, last = utt_id.rsplit("_", 1)
        g, idx = last[0], int(last[1:])
        own = [i for i, (gg, _) in enumerate(items.get(dialog, [])) if gg == g]
        if not own:
            continue
        idx = idx if idx < len(own) else 0
        pos = own[idx]
        chosen.add(f"{dialog}_{g}{idx:03d}")
        if (items[dialog][pos][1] in four) == want_four:
            continue
        swaps = [
            (d, j)
            for d, lst in items.items()
            for j, (gg, code) in enumerate(lst)
            if gg == g and (code in four) == want_four and f"{d}_{g}" not in chosen
        ]
        if swaps:
            d, j = swaps[0]
            items[d][j], items[dialog][pos] = (g, items[dialog][pos][1]), (g, items[d][j][1])
    return chosen
