"""edgernn.runtime.events: posteriors to keyword events (smoothing, threshold, hysteresis, refractory)."""

import json

import numpy as np
import pytest

from edgernn.core.errors import InputError
from edgernn.runtime.events import Event, EventDetector, EventOptions

LABELS = ["_silence_", "_unknown_", "yes", "no"]
STEP = 0.01  # 10 ms frames


def posteriors(spans, n, labels=LABELS, level=0.9):
    """(n, C): silence everywhere except `label` at `level` over each (label, first, last) span."""
    p = np.zeros((n, len(labels)))
    p[:, 0] = 1.0
    for label, first, last in spans:
        k = labels.index(label)
        p[first:last + 1] = (1 - level) / (len(labels) - 1)
        p[first:last + 1, k] = level
    return p


CROSSING = {"smooth": 0.1, "threshold": 0.6, "hysteresis": 0.2, "delay": 0.0}  # fire at the threshold crossing


def detect(p, **opts):
    return EventDetector(LABELS, step_seconds=STEP, options=EventOptions(**{**CROSSING, **opts})).push(p)


def test_one_event_per_word_timed_at_the_frame_that_fired():
    p = posteriors([("yes", 100, 149), ("no", 300, 329)], 500)
    events = detect(p, smooth=0.05)  # 5 frames: the mean passes 0.6 at the 4th frame of a word
    assert [(e.label, e.step) for e in events] == [("yes", 103), ("no", 303)]
    assert events[0].t == pytest.approx(1.04) and events[1].t == pytest.approx(3.04)  # end of frame 103
    assert events[0].p == pytest.approx(0.9)  # the frame's own posterior, not the smoothed 0.72


def test_smoothing_is_a_causal_moving_average():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(4), size=60)
    det = EventDetector(LABELS, step_seconds=STEP, options=EventOptions(smooth=0.07))
    got = det._smooth(p)
    want = np.stack([p[max(0, i - 6):i + 1].mean(axis=0) for i in range(60)])
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_a_single_loud_frame_does_not_fire_once_smoothed():
    p = posteriors([("yes", 50, 50)], 100, level=1.0)
    assert detect(p, smooth=0.1) == []
    assert [e.label for e in detect(p, smooth=0.0)] == ["yes"]  # no smoothing: it would


def test_hysteresis_a_sustained_keyword_fires_once():
    p = posteriors([("yes", 10, 400)], 500)  # a running readout that keeps saying "yes" for 4 s
    assert len(detect(p, refractory=0.0)) == 1


def test_hysteresis_needs_a_dip_below_threshold_minus_hysteresis():
    p = posteriors([("yes", 10, 60), ("yes", 63, 120)], 200)  # the dip lasts 2 frames
    dip = p.copy()
    dip[61:63, 2], dip[61:63, 0] = 0.5, 0.5  # smoothed "yes" never falls below 0.6 - 0.2
    assert len(detect(dip, smooth=0.0, refractory=0.0)) == 1
    dip[61:63, 2], dip[61:63, 0] = 0.3, 0.7  # below 0.4: re-armed
    assert len(detect(dip, smooth=0.0, refractory=0.0)) == 2


def test_refractory_time_silences_a_second_keyword():
    p = posteriors([("yes", 10, 30), ("no", 40, 80)], 200)
    assert [e.label for e in detect(p, smooth=0.0, refractory=0.5)] == ["yes"]
    assert [e.label for e in detect(p, smooth=0.0, refractory=0.2)] == ["yes", "no"]


@pytest.mark.parametrize("label", ["_silence_", "_unknown_"])
def test_silence_and_unknown_never_fire(label):
    p = posteriors([(label, 0, 99)], 100, level=1.0)
    assert detect(p) == []


def test_ignore_option_and_its_check():
    p = posteriors([("no", 10, 50)], 100)
    assert detect(p, ignore=("no",)) == []
    with pytest.raises(InputError, match="not a label"):
        EventDetector(LABELS, step_seconds=STEP, options=EventOptions(ignore=("maybe",)))


def test_pushing_in_pieces_equals_pushing_whole():
    rng = np.random.default_rng(1)
    p = posteriors([("yes", 40, 90), ("no", 200, 260), ("yes", 400, 470)], 600)
    p = 0.8 * p + 0.2 * rng.dirichlet(np.ones(4), size=len(p))
    opts = EventOptions(**{**CROSSING, "delay": 0.1})  # with a decision delay that may span pieces
    whole = EventDetector(LABELS, step_seconds=STEP, options=opts).push(p)
    det = EventDetector(LABELS, step_seconds=STEP, options=opts)
    pieces, i = [], 0
    for size in rng.integers(1, 25, size=100):
        pieces += det.push(p[i:i + size])
        i += size
    assert i >= len(p) and pieces == whole and len(whole) == 3


def test_skip_advances_the_clock_and_restarts_smoothing():
    det = EventDetector(LABELS, step_seconds=STEP, options=EventOptions(**{**CROSSING, "smooth": 0.03}))
    det.push(posteriors([], 10))
    det.skip(90)  # 90 frames of audio lost
    (e,) = det.push(posteriors([("yes", 0, 20)], 30))
    assert e.step == 100 and e.t == pytest.approx(1.01)  # full weight from the first frame after the gap


def word_heard_late(first, then, n=200):
    """A running classifier on "down": `first` for 25 frames mid-word, then `then` from frame 75."""
    return posteriors([(first, 50, 74)] + ([(then, 75, 150)] if then else []), n, level=0.97)


def test_decision_delay_fires_the_label_on_top_after_the_word_not_the_first_guess():
    p = word_heard_late("no", "yes")
    assert [e.label for e in detect(p)] == ["no"]  # at the crossing: the mid-word guess
    (e,) = detect(p, delay=0.3)  # the 10-frame mean of 0.97 passes 0.6 at frame 56; decided 30 later
    assert (e.label, e.step) == ("yes", 86) and e.t == pytest.approx(0.87)


def test_decision_delay_drops_a_guess_that_turns_out_unknown():
    assert [e.label for e in detect(word_heard_late("no", "_unknown_"))] == ["no"]
    assert detect(word_heard_late("no", "_unknown_"), delay=0.3) == []


def test_end_of_word_from_loudness_decides_for_the_label_after_the_word():
    p = word_heard_late("no", "yes", n=300)  # the word is loud over frames 50..85, its label settles at 75
    loud = np.full(300, -60.0)
    loud[50:86] = -10.0
    (e,) = EventDetector(LABELS, step_seconds=STEP).push(p, loud)  # the defaults, for readout "last"
    assert (e.label, e.step) == ("yes", 90)  # 5 frames 20 dB under the peak: frames 86..90
    assert [x.label for x in EventDetector(LABELS, step_seconds=STEP).push(p)] == ["no"]  # fixed 0.15 s: too soon
    loud[50:300] = -10.0  # no pause after the word: decided endpoint_wait (0.4 s) after the trigger
    (e,) = EventDetector(LABELS, step_seconds=STEP).push(p, loud)
    assert (e.label, e.step) == ("yes", 54 + 40)


def test_a_decision_below_threshold_fires_nothing():
    """ "yes no" said without a pause: "yes" triggers, but at the decision "no" leads at only 0.62."""
    p = posteriors([("yes", 50, 60), ("no", 61, 150)], 200, level=0.97)
    p[61:151] = posteriors([("no", 0, 89)], 90, level=0.62)
    loud = np.full(200, -10.0)  # no pause: decided endpoint_wait after the trigger
    assert EventDetector(LABELS, step_seconds=STEP).push(p, loud) == []


def test_loudness_must_match_the_frames():
    with pytest.raises(InputError, match="3 loudness values for 4 frames"):
        EventDetector(LABELS, step_seconds=STEP).push(np.full((4, 4), 0.25), np.zeros(3))


def test_per_frame_classifiers_fire_at_the_crossing():
    o = EventOptions.for_readout("every")
    assert (o.delay, o.endpoint, o.threshold) == (0.0, 0.0, 0.9)
    assert EventOptions.for_readout("every", delay=0.2).delay == 0.2
    assert EventOptions.for_readout("last") == EventOptions()


def test_default_options():
    o = EventOptions()
    assert (o.smooth, o.threshold, o.hysteresis, o.delay, o.refractory) == (0.05, 0.9, 0.4, 0.15, 0.5)
    (e,) = EventDetector(LABELS, step_seconds=STEP).push(posteriors([("yes", 100, 160)], 300, level=0.99))
    assert e.label == "yes" and e.step == 100 + 4 + 15  # 5-frame mean reaches 0.9 at the 5th frame, +15


def test_event_json_line():
    line = Event("yes", 12.3449999, 0.97123, 1234).to_json()
    assert json.loads(line) == {"event": "yes", "t": 12.345, "p": 0.971, "step": 1234}


@pytest.mark.parametrize("opts,match", [({"threshold": 1.5}, "threshold"), ({"smooth": -1}, "smooth"),
                                        ({"hysteresis": 0.95}, "hysteresis"), ({"refractory": float("nan")}, "refractory"),
                                        ({"delay": -0.1}, "delay")])
def test_bad_options_say_what_was_expected(opts, match):
    with pytest.raises(InputError, match=match):
        EventOptions(**opts)


def test_bad_posteriors_shape():
    with pytest.raises(InputError, match=r"expected \(T, 4\)"):
        EventDetector(LABELS, step_seconds=STEP).push(np.zeros((3, 5)))
