"""Aggregation math on synthetic result streams: no Flask, no model, a fake clock."""
from __future__ import annotations

import pytest

from app.classroom.aggregate import (EMOTIONS, ClassAggregate, Record, Settings, distribution, engagement,
                                     negative_share, primary_face, timeline)

T0 = 1_800_000_000  # a whole second, divisible by 5 and 10


def scores(**kw) -> dict[str, float]:
    """A probability vector: the given emotions, the rest of the mass on neutral."""
    out = {e: 0.0 for e in EMOTIONS}
    out.update(kw)
    out["neutral"] = round(1.0 - sum(v for k, v in out.items() if k != "neutral"), 10)
    return out


def face(box=(0, 0, 100, 100), **kw) -> dict:
    s = scores(**kw)
    return {"id": 1, "box": list(box), "label": max(s, key=s.get), "scores": s}


def rec(student, second, frames_with: list[dict], no_face: int = 0) -> Record:
    r = Record(student, second)
    for s in frames_with:
        r.add(s)
    for _ in range(no_face):
        r.add(None)
    return r


# -- pure functions -------------------------------------------------------------------------------

def test_primary_face_is_the_largest_box():
    small, big = face((0, 0, 10, 10), happy=1.0), face((50, 50, 80, 60), sad=1.0)
    assert primary_face([small, big]) is big
    assert primary_face([]) is None


def test_record_means_and_round_trip():
    r = rec(1, T0, [scores(happy=1.0), scores(sad=0.5)], no_face=2)
    assert (r.frames, r.face_frames) == (4, 2)
    means = dict(zip(EMOTIONS, r.means()))
    assert means["happy"] == pytest.approx(0.5) and means["sad"] == pytest.approx(0.25)
    assert means["neutral"] == pytest.approx(0.25)
    back = Record.from_means(1, T0, r.means(), r.face_frames, r.frames)
    assert back.sums == pytest.approx(r.sums) and back.frames == 4


def test_distribution_weighs_students_equally_not_frames():
    fast = rec(1, T0, [scores(happy=1.0)] * 30)     # 30 fps laptop, happy
    slow = rec(2, T0, [scores(sad=1.0)])            # 1 fps, sad
    dist = distribution([fast, slow])
    assert dist["happy"] == pytest.approx(0.5) and dist["sad"] == pytest.approx(0.5)
    assert sum(dist.values()) == pytest.approx(1.0)


def test_distribution_averages_a_students_frames_across_seconds():
    dist = distribution([rec(1, T0, [scores(happy=1.0)] * 3), rec(1, T0 + 1, [scores(angry=1.0)])])
    assert dist["happy"] == pytest.approx(0.75) and dist["angry"] == pytest.approx(0.25)


def test_distribution_is_none_without_any_face():
    assert distribution([]) is None
    assert distribution([rec(1, T0, [], no_face=5)]) is None


def test_engagement_formula():
    # Student 1: face in every frame, neutral -> 1.0. Student 2: face in half the frames, all sad
    # (negative 1.0) -> 0.5 * (1 - 0.5) = 0.25. Mean 0.625.
    records = [rec(1, T0, [scores()] * 4), rec(2, T0, [scores(sad=1.0)] * 2, no_face=2)]
    assert engagement(records) == pytest.approx(0.625)
    # A connected student with no frame at all counts with presence 0.
    assert engagement(records, students=[1, 2, 3]) == pytest.approx(1.25 / 3)
    assert engagement([]) is None


def test_negative_share():
    assert negative_share(scores(angry=0.1, disgust=0.1, fear=0.1, sad=0.1, happy=0.5)) == pytest.approx(0.4)
    assert negative_share(None) == 0.0


def test_timeline_buckets_by_step_and_skips_empty_buckets():
    records = [rec(1, T0 + 1, [scores(happy=1.0)]), rec(2, T0 + 4, [scores(sad=1.0)]),
               rec(1, T0 + 12, [scores(angry=1.0)])]
    points = timeline(records, step=5)
    assert [p["second"] for p in points] == [T0, T0 + 10]
    assert points[0]["students"] == 2
    assert points[0]["distribution"]["happy"] == pytest.approx(0.5)
    assert points[1]["distribution"]["angry"] == pytest.approx(1.0)
    assert points[0]["t"].endswith("Z")


# -- the live aggregate ---------------------------------------------------------------------------

def make_agg(**kw) -> ClassAggregate:
    settings = Settings(**{"window": 10.0, "timeline_step": 5, "stale_after": 8.0, "negative_share": 0.5,
                           "negative_for": 30.0, **kw})
    return ClassAggregate(7, "ABC234", "Biology", aggregate_only=False, settings=settings, started=T0)


def test_summary_distribution_covers_the_last_window_only():
    agg = make_agg()
    agg.join(1, "Ann", "sid-a", now=T0)
    for i in range(5):                                   # happy at T0..T0+4
        agg.add(1, [face(happy=1.0)], now=T0 + i + 0.5)
    for i in range(5, 20):                               # sad from T0+5 on
        agg.add(1, [face(sad=1.0)], now=T0 + i + 0.5)
    s = agg.summary(now=T0 + 20)
    assert s["students"] == 1 and s["faces"] == 1
    assert s["distribution"]["sad"] == pytest.approx(1.0)   # the happy seconds are older than 10 s
    assert s["distribution"]["happy"] == 0.0


def ann_and_ben(ann: list, ben: list, seconds: int, offset: float):
    """An aggregate that Ann (id 1, sid "sid-a") and Ben (id 2, "sid-b") joined at T0 and sent ``ann`` and ``ben``
    (their faces) once a second for ``seconds``, ``offset`` s into each second."""
    agg = make_agg()
    agg.join(1, "Ann", "sid-a", now=T0)
    agg.join(2, "Ben", "sid-b", now=T0)
    for i in range(seconds):
        agg.add(1, ann, now=T0 + i + offset)
        agg.add(2, ben, now=T0 + i + offset)
    return agg


def test_now_is_the_students_connected_now():
    agg = ann_and_ben([face(happy=1.0)], [face(sad=1.0)], seconds=5, offset=0.5)
    agg.leave(2, "sid-b", now=T0 + 5)  # Ben left a second ago: his last seconds are still in the window
    s = agg.summary(now=T0 + 6, full_timeline=True)
    assert s["students"] == 1 and s["faces"] == 1  # not 2 faces for 1 student
    assert s["distribution"]["happy"] == pytest.approx(1.0) and s["negative"] == 0.0
    assert s["timeline"][0]["distribution"]["sad"] == pytest.approx(0.5)  # the session's history keeps him


def test_only_joined_students_count():
    agg = make_agg()
    agg.add(99, [face(happy=1.0)], now=T0)  # never joined: ignored
    assert agg.frames == 0 and agg.summary(now=T0 + 1)["distribution"]["happy"] == 0.0


def test_seconds_are_drained_once_and_close_flushes_the_rest():
    agg = make_agg()
    agg.join(1, "Ann", "a", now=T0)
    agg.join(2, "Ben", "b", now=T0)
    for t in (T0 + 0.1, T0 + 0.6, T0 + 1.2, T0 + 2.5):
        agg.add(1, [face(happy=0.8)], now=t)
    agg.add(2, [], now=T0 + 1.5)  # no face
    agg.roll(now=T0 + 2.9)
    drained = agg.drain()
    assert sorted((r.student, r.second, r.frames) for r in drained) == [(1, T0, 2), (1, T0 + 1, 1), (2, T0 + 1, 1)]
    assert agg.drain() == []
    # A late result stamped in an already stored second goes into the next open one.
    agg.add(1, [face(happy=1.0)], now=T0 + 1.9)
    rest = agg.close(now=T0 + 3.0)
    assert sorted((r.second, r.frames) for r in rest) == [(T0 + 2, 2)]


def test_timeline_closes_buckets_and_the_open_one_is_reported_too():
    agg = make_agg()
    agg.join(1, "Ann", "a", now=T0)
    for i in range(12):
        agg.add(1, [face(happy=1.0) if i < 5 else face(surprise=1.0)], now=T0 + i + 0.5)
    s = agg.summary(now=T0 + 12, full_timeline=True)
    assert [p["second"] for p in s["timeline"]] == [T0, T0 + 5, T0 + 10]
    assert s["timeline"][0]["distribution"]["happy"] == pytest.approx(1.0)
    assert s["timeline"][1]["distribution"]["surprise"] == pytest.approx(1.0)
    assert len(agg.summary(now=T0 + 12, tail=1)["timeline"]) == 1


def test_old_seconds_are_forgotten():
    agg = make_agg()
    agg.join(1, "Ann", "a", now=T0)
    for i in range(300):
        agg.add(1, [face(happy=1.0)], now=T0 + i)
    agg.roll(now=T0 + 300)
    assert len(agg._seconds) <= 25
    assert len(agg.drain()) == 300


def test_negative_alert_only_after_the_sustained_period():
    agg = make_agg(negative_for=30.0)
    agg.join(1, "Ann", "a", now=T0)
    alerts_at = {}
    for i in range(45):
        agg.add(1, [face(angry=0.7)], now=T0 + i)
        alerts_at[i] = [a["kind"] for a in agg.summary(now=T0 + i + 0.5)["alerts"]]
    assert "negative" not in alerts_at[20]
    assert "negative" in alerts_at[40]
    # Its text changes once a minute at most (screen readers read the alert list out on every change).
    messages = {agg.summary(now=T0 + t)["alerts"][0]["message"] for t in (35.5, 40.5, 44.5)}
    assert messages == {("Negative emotions (angry, disgust, fear, sad) have been above 50% of the class mood "
                         "for 30 s or more.")}
    later = make_agg(negative_for=30.0)
    later.join(1, "Ann", "a", now=T0)
    for i in range(130):
        later.add(1, [face(angry=0.7)], now=T0 + i)
        alert = later.summary(now=T0 + i + 0.5)["alerts"]  # the dashboard's pushes follow the mood
    (alert,) = alert
    assert alert["message"].endswith("of the class mood for 2 min.")
    # Back to happy: the alert clears once the window no longer is mostly negative.
    for i in range(45, 60):
        agg.add(1, [face(happy=0.9)], now=T0 + i)
    assert "negative" not in [a["kind"] for a in agg.summary(now=T0 + 60)["alerts"]]


def test_camera_stopped_and_connection_lost_alerts():
    agg = make_agg(stale_after=8.0)
    agg.join(1, "Ann", "a", now=T0)
    agg.join(2, "Ben", "b", now=T0)
    agg.join(3, "Cem", "c", now=T0)
    for i in range(5):
        for st in (1, 2, 3):
            agg.add(st, [face(happy=0.6)], now=T0 + i)
    agg.leave(2, "b", now=T0 + 5, dropped=True)     # connection lost
    agg.leave(3, "c", now=T0 + 5, dropped=False)    # stopped sharing on purpose
    frames = agg.frames
    agg.add(3, [face(happy=0.6)], now=T0 + 6)       # a stream that left no longer counts
    assert agg.frames == frames
    s = agg.summary(now=T0 + 20)
    kinds = {(a["kind"], a.get("student")) for a in s["alerts"]}
    assert ("stale", 1) in kinds                      # Ann's camera went silent for > 8 s
    assert ("lost", 2) in kinds
    assert not any(st == 3 for _, st in kinds)
    assert s["students"] == 1
    tiles = {t["name"]: t["status"] for t in s["per_student"]}
    assert tiles == {"Ann": "stale", "Ben": "lost", "Cem": "left"}
    # Reconnecting clears the lost alert.
    agg.join(2, "Ben", "b2", now=T0 + 21)
    assert not [a for a in agg.summary(now=T0 + 21.5)["alerts"] if a["kind"] == "lost"]


def test_tiles_show_the_current_smoothed_emotion():
    agg = ann_and_ben([face(happy=0.9)], [], seconds=4, offset=0.2)
    tiles = {t["name"]: t for t in agg.summary(now=T0 + 4)["per_student"]}
    assert tiles["Ann"]["label"] == "happy" and tiles["Ann"]["status"] == "active"
    assert tiles["Ann"]["score"] == pytest.approx(0.9) and tiles["Ann"]["last_seen"].endswith("Z")
    assert tiles["Ben"]["status"] == "no-face" and tiles["Ben"]["label"] is None


def test_aggregate_only_hides_every_per_student_detail():
    agg = make_agg(stale_after=2.0)
    agg.aggregate_only = True
    agg.join(1, "Ann Secret", "a", now=T0)
    agg.join(2, "Ben Secret", "b", now=T0)
    agg.add(1, [face(happy=1.0)], now=T0)
    agg.leave(2, "b", now=T0 + 1, dropped=True)
    s = agg.summary(now=T0 + 5, full_timeline=True)
    assert "per_student" not in s
    assert s["alerts"] and all("student" not in a for a in s["alerts"])
    text = repr(s)
    assert "Secret" not in text and "Ann" not in text and "Ben" not in text
    assert s["distribution"]["happy"] == pytest.approx(1.0)
