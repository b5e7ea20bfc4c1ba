"""Labelled moderation posts made on the spot (nothing downloaded): for the demo, the tests and the
benchmarks of the text models.

    python -m demo.moderation_posts --sqlite PATH     # a day of posts into demo_moderation_posts
    python -m demo.moderation_posts --postgres URI

Each post is an everyday remark ("ok") or spam, a scam or an insult ("flagged"), built from
phrase lists in English and Japanese (no spaces between words), with a share of empty and very
long posts, and some label noise so that no model is perfect. The same seed gives the same posts.
"""

from __future__ import annotations

OK = [
    "thanks for the update, see you at the meeting", "the new release fixed my login problem",
    "does anyone know a good recipe for lentil soup", "great photos from the trip to the coast",
    "I finished the book you recommended last week", "the train was late again this morning",
    "happy birthday, hope you have a lovely day", "the library opens at nine on saturdays",
    "could you share the slides from the talk", "my garden tomatoes are finally ripe",
    "今日はとても良い天気ですね", "会議の資料を共有していただけますか", "新しいカフェのコーヒーが美味しかった",
    "週末は家族と公園に行きました", "駅の近くに本屋ができました",
]
FLAGGED = [
    "click this link to win a free phone now", "buy cheap followers today limited offer",
    "you are an idiot and everyone hates you", "send me your bank password to claim the prize",
    "earn 5000 dollars a day from home, no work", "this is a scam, wire the money to my account",
    "shut up you stupid loser", "free crypto giveaway, send 1 coin get 10 back",
    "今すぐクリックして賞品を受け取ってください", "簡単に稼げる副業、登録は無料です", "お前は本当にバカだな",
    "口座番号を教えてくれれば当選金を送ります",
]
FILLER = ["honestly", "well", "lol", "ok", "so", "本当に", "ちなみに", "!!!", "...", "btw"]


def posts(n: int, seed: int = 0, noise: float = 0.05, odd_share: float = 0.02) -> tuple[list[str], list[str]]:
    """(texts, labels) of ``n`` posts; ``odd_share`` of them empty or very long (half each)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(n):
        flagged = bool(rng.random() < 0.3)
        pool = FLAGGED if flagged else OK
        parts = [pool[rng.integers(len(pool))]]
        if rng.random() < 0.5:
            parts.append(FILLER[rng.integers(len(FILLER))])
        if rng.random() < 0.3:
            parts.insert(0, OK[rng.integers(len(OK))])  # flagged content hides among ordinary words
        text = " ".join(parts)
        roll = rng.random()
        if roll < odd_share / 2:
            text = ""
        elif roll < odd_share:
            text = " ".join([text] * 200)  # a very long post
        if rng.random() < noise:
            flagged = not flagged
        texts.append(text)
        labels.append("flagged" if flagged else "ok")
    return texts, labels


def table(n: int, seed: int = 0, odd_share: float = 0.02):
    """The posts as an Arrow table: ``text``, ``length`` (a numeric feature beside the text), ``label``."""
    import pyarrow as pa

    texts, labels = posts(n, seed, odd_share=odd_share)
    return pa.table({"text": texts, "length": [len(t) for t in texts], "label": labels})


TABLE = "demo_moderation_posts"
POSTS_PER_DAY = 400


def day_rows(day: int) -> list[tuple]:
    """Day 0: 2,000 posts; each later day 400 more, with event times inside that day's interval
    (the same scheme as demo/seed_source.py, so the same DAG schedule extracts them)."""
    from datetime import timedelta

    from demo.seed_source import EPOCH

    n = 2000 if day == 0 else POSTS_PER_DAY
    texts, labels = posts(n, seed=1000 + day)
    start, step = EPOCH + timedelta(days=day), timedelta(days=1) / (n + 1)
    return [(text, "ja" if any(ord(c) > 0x3000 for c in text) else "en", len(text), label,
             (start + step * (i + 1)).isoformat()) for i, (text, label) in enumerate(zip(texts, labels))]


def seed(conn, placeholder: str, ts_type: str):
    """Append the next day of posts to ``demo_moderation_posts``; returns the logical date to run."""
    from demo.seed_source import append_day

    return append_day(conn, TABLE, f"text TEXT NOT NULL, lang TEXT NOT NULL, length INTEGER NOT NULL, "
                                   f"label TEXT NOT NULL, event_time {ts_type} NOT NULL", day_rows, placeholder, "posts")


def main() -> None:
    from demo.seed_source import seed_cli

    seed_cli(seed, "Append a day of labelled moderation posts to the demo source table")


if __name__ == "__main__":
    main()
