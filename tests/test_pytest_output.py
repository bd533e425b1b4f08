"""What pytest prints: every skip reason once, with its count, after the run."""

from __future__ import annotations

import pytest

from bench.pytest_plugin import Skip, skip_summary

SLOW = "is marked slow; run it with --run-slow"


def test_identical_reasons_share_a_line_most_items_first() -> None:
    skips = [Skip("tests/test_b.py", "no chromium", False)] * 2
    skips += [Skip("suites/micro/lab_keywords.yaml", SLOW, True)] * 4
    skips += [Skip("tests/test_a.py", "no chromium", False)]
    skips += [Skip("tests/test_a.py", "needs $KEY", False)]
    assert skip_summary(skips) == [
        f"skipped 4: suites/micro/lab_keywords.yaml {SLOW}",
        "skipped 3 in 2 files (test_a.py, test_b.py): no chromium",
        "skipped 1: tests/test_a.py: needs $KEY",
    ]


def test_suites_skipped_for_one_reason_are_named_on_one_line() -> None:
    skips = [Skip(f"suites/paper/tldr_{n}.yaml", "needs a CUDA GPU", True) for n in range(8)]
    skips += [Skip("suites/micro/lab_hidden.yaml", SLOW, True)] * 2
    skips += [Skip("suites/micro/lab_keywords.yaml", SLOW, True)] * 3
    assert skip_summary(skips, max_names=6) == [
        "skipped 8 in 8 suites (tldr_0, tldr_1, tldr_2, tldr_3, tldr_4, tldr_5 and 2 more): "
        "each needs a CUDA GPU",
        f"skipped 5 in 2 suites (lab_hidden, lab_keywords): each {SLOW}",
    ]


def test_pytest_prints_the_skip_reasons_of_suites_and_tests_by_default(
    tiny_suite_text: str, pytester: pytest.Pytester
) -> None:
    slow = tiny_suite_text + "requires: [slow]\n"
    pytester.makefile(".yaml", **{"suites/slow_a": slow, "suites/slow_b": slow})
    pytester.makepyfile(
        test_skips="""
        import pytest

        @pytest.mark.parametrize("n", range(3))
        def test_needs_a_key(n):
            pytest.skip("needs $SOME_KEY")

        def test_runs():
            pass
        """
    )
    result = pytester.runpytest("suites", "test_skips.py")
    result.assert_outcomes(passed=1, skipped=11)
    result.stdout.fnmatch_lines(
        [
            "*= skipped, by reason =*",
            f"skipped 8 in 2 suites (slow_a, slow_b): each {SLOW}",
            "skipped 3: test_skips.py: needs $SOME_KEY",
        ]
    )


def test_suite_cells_are_end_to_end_and_not_e2e_leaves_the_rest(
    tiny_suite_text: str, pytester: pytest.Pytester
) -> None:
    pytester.makefile(".yaml", **{"suites/tiny": tiny_suite_text})
    pytester.makepyfile(test_unit="def test_fast():\n    pass\n")
    result = pytester.runpytest("--collect-only", "-q", "-m", "not e2e", "suites", "test_unit.py")
    result.stdout.fnmatch_lines(["test_unit.py::test_fast", "1/5 tests collected (4 deselected)*"])
    assert "PytestUnknownMarkWarning" not in result.stdout.str()
