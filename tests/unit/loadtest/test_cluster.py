"""What the loopback cluster's answers say: failed requests, the mixed-version window, recovery."""

from __future__ import annotations

import math

from loadtest.cluster import Answer, every_gateway_answers, failed, first_answer_s, mixed_window_s

# (time, gateway, status, version or error)
PROMOTION: list[Answer] = [
    (9.0, 0, 200, "1"),  # before the promotion: not counted
    (10.1, 0, 200, "1"),
    (10.2, 1, 200, "1"),
    (10.5, 0, 200, "2"),  # first answer with the new version
    (10.7, 1, 200, "1"),  # gateway 1 has not switched yet
    (10.9, 1, 503, "Triton unavailable"),  # an error is neither version
    (11.2, 1, 200, "1"),  # last answer with the old version
    (11.3, 1, 200, "2"),
    (11.4, 0, 200, "2"),
]


def test_the_mixed_window_runs_from_the_first_new_answer_to_the_last_old_one() -> None:
    assert math.isclose(mixed_window_s(PROMOTION, "1", "2", since=10.0), 0.7)


def test_no_old_answer_after_the_first_new_one_is_a_zero_window() -> None:
    answers: list[Answer] = [(1.0, 0, 200, "1"), (2.0, 1, 200, "2"), (2.1, 0, 200, "2")]
    assert mixed_window_s(answers, "1", "2", since=0.0) == 0.0


def test_a_new_version_never_answered_has_no_window() -> None:
    assert math.isnan(mixed_window_s(PROMOTION, "1", "3", since=10.0))


def test_every_gateway_answers_with_the_new_version_once_each_last_answer_has_it() -> None:
    assert every_gateway_answers(PROMOTION, 2, "2", since=10.0)
    assert not every_gateway_answers(PROMOTION[:7], 2, "2", since=10.0)  # gateway 1 still on v1
    assert not every_gateway_answers(PROMOTION, 3, "2", since=10.0)  # gateway 2 never answered


def test_failed_requests_are_the_non_200_answers_in_the_window() -> None:
    answers: list[Answer] = [*PROMOTION, (12.0, 0, 0, "ConnectError()")]
    assert failed(answers) == [PROMOTION[5], (12.0, 0, 0, "ConnectError()")]
    assert failed(answers, since=10.0, until=11.0) == [PROMOTION[5]]


def test_recovery_is_the_first_answer_with_the_routed_version_after_the_restart() -> None:
    answers: list[Answer] = [
        (5.0, 0, 200, "1"),
        (6.0, 0, 503, "no server"),
        (7.5, 1, 200, "2"),  # another version does not count
        (8.25, 1, 200, "1"),
        (9.0, 0, 200, "1"),
    ]
    assert first_answer_s(answers, "1", since=6.0) == 2.25
    assert first_answer_s(answers, "1", since=9.5) is None
