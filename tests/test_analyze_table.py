"""Reading results.csv: types, and errors that name the file, line and column."""

from __future__ import annotations


import numpy as np
import pytest

from losslens.analyze.table import read_results
from losslens.counts import count_label
from losslens.errors import ResultsError
from losslens.contracts import RESULTS_COLUMNS
from losslens.errors import LossLensError
from tests.conftest import write_results_csv

ROW = {"run": "s_1M", "n_params": 900000, "n_params_nonembed": 800000, "tokens": 1000, "step": 1, "flops": "",
       "loss": 3.5, "task": "t", "metric": "acc", "value": 0.3, "ci_low": "", "ci_high": "", "n": 100,
       "chance": 0.25}


def write(tmp_path, rows, columns=RESULTS_COLUMNS):
    return write_results_csv(tmp_path / "results.csv", rows, columns)


def test_reads_typed_columns_and_fills_flops(tmp_path):
    t = read_results(write(tmp_path, [ROW, {**ROW, "tokens": 2000, "metric": "prob_correct", "chance": ""}]))
    assert len(t) == 2 and t.tasks() == ["t"] and t.metrics("t") == ["acc", "prob_correct"]
    assert t.run_budget("s_1M") == 2000 and t.size_label(900000) == "0.8M"
    assert t.cols["flops"][0] == 6.0 * 800000 * 1000  # empty flops: 6 N D
    assert t.series("t", "acc").chance == 0.25 and t.series("t", "prob_correct").chance is None


@pytest.mark.parametrize("change, message", [
    ({"loss": "abc"}, "results.csv:3: column 'loss': expected a number, got 'abc'"),
    ({"loss": "-1"}, "results.csv:3: column 'loss': must be positive"),
    ({"value": ""}, "results.csv:3: column 'value': empty"),
    ({"value": "nan"}, "results.csv:3: column 'value': expected a finite number"),
    ({"tokens": "1.5"}, "results.csv:3: column 'tokens': expected an integer"),
    ({"n_params": "5"}, "results.csv:3: column 'n_params': run 's_1M' has two sizes"),
    ({"tokens": 1000}, "results.csv:3: duplicate row for run 's_1M', tokens 1000, task 't', metric 'acc' "
                       "(first on line 2)"),
])
def test_bad_cells_name_file_line_and_column(tmp_path, change, message):
    path = write(tmp_path, [ROW, {**ROW, "tokens": 2000, **change}])
    with pytest.raises(ResultsError) as e:
        read_results(path)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert isinstance(e.value, LossLensError)


def test_the_first_wrong_cell_in_file_order_is_named(tmp_path):
    # One parser for every cell: the earliest row wins over a later one, then the leftmost column
    path = write(tmp_path, [{**ROW, "n": "2.5", "value": "x"}, {**ROW, "tokens": 2000, "loss": "abc"}])
    with pytest.raises(ResultsError, match=r"results\.csv:2: column 'value': expected a number, got 'x'$"):
        read_results(path)
    path = write(tmp_path, [ROW, {**ROW, "tokens": "2e3", "n": "2.5", "chance": "inf"}])
    with pytest.raises(ResultsError, match=r"results\.csv:3: column 'n': expected an integer, got '2\.5'$"):
        read_results(path)
    t = read_results(write(tmp_path, [{**ROW, "tokens": "1e3", "ci_low": "NaN", "ci_high": "nan", "n": ""}]))
    assert t.cols["tokens"].tolist() == [1000] and np.isnan(t.cols["ci_low"][0]) and np.isnan(t.cols["n"][0])


def test_missing_columns_empty_table_and_missing_file(tmp_path):
    with pytest.raises(ResultsError, match="missing column\\(s\\) chance"):
        read_results(write(tmp_path, [ROW], columns=RESULTS_COLUMNS[:-1]))
    with pytest.raises(ResultsError, match="no rows"):
        read_results(write(tmp_path, []))
    with pytest.raises(ResultsError, match="not found"):
        read_results(tmp_path / "nope.csv")


def test_count_labels():
    assert [count_label(v) for v in (812_345, 4.2e6, 32768, 1.5e9, 250e6, 512)] == \
        ["0.81M", "4.2M", "33K", "1.5B", "250M", "512"]
    # under 1,000: whole numbers, not "650.573" (a forecast's token count in the ladder's report)
    assert [count_label(v) for v in (650.573, 999.4, 12.5, 3.0, 0.5)] == ["651", "999", "12", "3", "0.5"]


def test_a_table_from_another_study_is_refused(tmp_path):
    import json

    from losslens.analyze.study_folder import check_table_matches_study
    from losslens.contracts import META_FILE, checkpoint_dirname

    study = tmp_path / "study"
    ckpt = study / "s_1M" / checkpoint_dirname(1000)
    ckpt.mkdir(parents=True)
    (ckpt / META_FILE).write_text(json.dumps({"n_params": ROW["n_params"]}))
    check_table_matches_study(read_results(write(tmp_path, [ROW])), study)  # its own table: fine
    check_table_matches_study(read_results(write(tmp_path, [ROW])), tmp_path / "no-runs-here")  # nothing to check
    with pytest.raises(ResultsError, match=r"results.csv:2: run 'm_1M' is not a run of the study .*another study"):
        check_table_matches_study(read_results(write(tmp_path, [{**ROW, "run": "m_1M"}])), study)
    with pytest.raises(ResultsError, match=r"results.csv:2: run 's_1M' has n_params 5 but its checkpoint"):
        check_table_matches_study(read_results(write(tmp_path, [{**ROW, "n_params": 5, "n_params_nonembed": 4}])), study)


def test_rows_in_any_order_give_the_same_grid_and_series(tmp_path):
    rows = [{**ROW, "run": run, "n_params": n, "tokens": tok, "task": task, "metric": metric, "value": v}
            for run, n in (("b", 2000000), ("a", 900000)) for tok in (3000, 1000, 2000)
            for task in ("t2", "t1") for metric, v in (("prob_correct", 0.4), ("acc", 0.3))]
    ordered = read_results(write(tmp_path, rows))
    shuffled = read_results(write(tmp_path, [rows[i] for i in np.random.default_rng(0).permutation(len(rows))]))
    for t in (ordered, shuffled):
        assert t.runs() == ["a", "b"] and t.sizes() == [900000, 2000000] and t.budgets() == [3000]
        assert t.tasks() == ["t1", "t2"] and t.metrics("t1") == ["acc", "prob_correct"]
        s = t.series("t1", "acc")
        assert s.run.tolist() == ["a"] * 3 + ["b"] * 3 and s.tokens.tolist() == [1000, 2000, 3000] * 2
        ck = t.checkpoints()
        assert ck["run"].tolist() == ["a"] * 3 + ["b"] * 3 and ck["tokens"].tolist() == [1000, 2000, 3000] * 2
    assert len(ordered.series("t1", "nope")) == 0
