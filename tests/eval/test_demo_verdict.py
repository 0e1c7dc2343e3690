"""The demo's verdict and per-round speed spread: pure functions, no model."""

import pytest

from cachekit.demo import Speed, verdict

ANCHOR = ("the best anchor", Speed(1.84, 1.80, 1.88), 31.55)


def test_speed_is_median_and_quartiles_of_per_round_ratios():
    # uncached 4, 6, 8, 10, 12 s against a pass that took 2, 2, 2, 2, 3 s: ratios 2, 3, 4, 5, 4
    sp = Speed.of([4, 6, 8, 10, 12], [2, 2, 2, 2, 3])
    assert (sp.low, sp.median, sp.high) == (3.0, 4.0, 4.0)
    assert str(Speed(1.95, 1.8, 2.05)) == "1.95x (1.80-2.05)"
    # load that doubles both passes of one round leaves that round's ratio as it was
    assert Speed.of([4.0, 8.0, 4.0], [2.0, 4.0, 2.0]) == Speed(2.0, 2.0, 2.0)


def test_speed_needs_the_same_rounds_on_both_sides():
    with pytest.raises(ValueError, match="same rounds on both sides, got 3 and 2"):
        Speed.of([1, 2, 3], [1, 2])


def test_apart_and_faster_beats():
    text = verdict(("recipe 'digits'", Speed(1.95, 1.91, 2.00), 34.66), ANCHOR)
    assert text == ("recipe 'digits' beats the best anchor: 1.95x (1.91-2.00) vs 1.84x (1.80-1.88) "
                    "at 34.66 vs 31.55 dB.")


def test_apart_and_slower_is_slower():
    text = verdict(("cachekit.apply(pipe)", Speed(1.33, 1.30, 1.36), 31.60), ANCHOR)
    assert text == ("cachekit.apply(pipe) does not beat the best anchor: "
                    "slower (1.33x (1.30-1.36) vs 1.84x (1.80-1.88)).")


@pytest.mark.parametrize("ours", [Speed(1.95, 1.87, 2.05),    # medians 6% apart, ranges touch at 1.87-1.88
                                  Speed(1.79, 1.70, 1.81)])   # slower median, ranges overlap
def test_overlapping_spreads_are_within_noise(ours):
    text = verdict(("recipe 'digits'", ours, 34.66), ANCHOR)
    assert text == (f"recipe 'digits' does not clearly beat the best anchor: speed within noise ({ours} vs "
                    "1.84x (1.80-1.88), interquartile ranges overlap) at 34.66 vs 31.55 dB.")
    assert "slower" not in text and " beats " not in text


def test_lower_psnr_does_not_beat_even_when_faster():
    text = verdict(("recipe", Speed(2.50, 2.40, 2.60), 31.00), ANCHOR)
    assert text == "recipe does not beat the best anchor: 0.55 dB lower PSNR (31.00 vs 31.55)."
    # within noise and lower PSNR: both said
    text = verdict(("recipe", Speed(1.85, 1.82, 1.90), 31.00), ANCHOR)
    assert text == ("recipe does not beat the best anchor: speed within noise (1.85x (1.82-1.90) vs 1.84x "
                    "(1.80-1.88)) and 0.55 dB lower PSNR (31.00 vs 31.55).")


def test_one_line_per_cachekit_column_in_order():
    lines = verdict(("a", Speed(1.33, 1.30, 1.36), 31.6), ("b", Speed(2.2, 2.1, 2.3), 34.7), ANCHOR).splitlines()
    assert [ln.split(" ")[0] for ln in lines] == ["a", "b"]
    assert "slower" in lines[0] and " beats " in lines[1]
