"""The app under concurrent clients (issue 15): no failed request, temporary files that do not
grow with repeated requests. Bounded and local: a small instance of ``benchmarks.load``."""

from benchmarks.load import run


def test_concurrent_requests_all_succeed_and_leave_no_growing_files():
    rows = run(clients=4, requests=2, rounds=2, timeout_s=300)
    assert [r["failures"] for r in rows] == [0, 0]
    assert rows[1]["temp_files"] == rows[0]["temp_files"]  # the same photo again adds no file
    assert rows[1]["rss_mb"] < 1.1 * rows[0]["rss_mb"]
