"""Tasks: the data each one promises, and clear errors for bad csv input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from handgrad.train.tasks import (
    MAX_CLASSES_FOR_INTEGER_TARGET,
    cubic_task,
    digits_task,
    load_task,
    stratified_split,
)


def test_cubic_train_targets_are_x_cubed_plus_noise_of_sigma_0_1() -> None:
    task = load_task("cubic", seed=0)
    assert task.kind == "regression"
    assert task.x_train.shape == (1000, 1)
    assert task.y_train.shape == (1000, 1)
    assert task.x_train.min() >= -2
    assert task.x_train.max() <= 2
    noise = task.y_train - task.x_train**3
    # 1000 draws of N(0, 0.1²): the sample std is within ±10 % with overwhelming probability.
    assert 0.09 < float(noise.std()) < 0.11
    assert abs(float(noise.mean())) < 0.01


def test_cubic_test_targets_are_noise_free_on_an_even_grid() -> None:
    task = cubic_task(seed=0)
    assert torch.equal(task.x_test, torch.linspace(-2, 2, 201).unsqueeze(1))
    assert torch.equal(task.y_test, task.x_test**3)
    assert task.hidden == (100,)
    model = task.reference_model(seed=0)
    assert [tuple(p.shape) for p in model.parameters()] == [(100, 1), (100,), (1, 100), (1,)]
    assert isinstance(model[1], torch.nn.ReLU)


def test_cubic_data_depend_on_the_seed_only() -> None:
    assert torch.equal(cubic_task(seed=1).y_train, cubic_task(seed=1).y_train)
    assert not torch.equal(cubic_task(seed=1).y_train, cubic_task(seed=2).y_train)


def test_classroom_net_with_dropout() -> None:
    model = cubic_task(dropout=0.2).reference_model(seed=0)
    assert [type(layer).__name__ for layer in model] == ["Linear", "ReLU", "Dropout", "Linear"]


def test_reference_model_is_a_function_of_the_seed_and_leaves_global_rng_alone() -> None:
    task = cubic_task()
    before = torch.get_rng_state()
    a, b, c = task.reference_model(5), task.reference_model(5), task.reference_model(6)
    assert torch.equal(torch.get_rng_state(), before)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert not torch.equal(a[0].weight, c[0].weight)


def test_digits_split_is_stratified_disjoint_and_standardized() -> None:
    task = digits_task(seed=0)
    assert task.kind == "classification"
    assert task.x_train.shape[1] == 64
    assert len(task.x_train) + len(task.x_test) == 1797
    assert len(task.class_names) == 10
    assert task.y_train.dtype == torch.int64
    train_counts = torch.bincount(task.y_train, minlength=10).double()
    test_counts = torch.bincount(task.y_test, minlength=10).double()
    fraction = test_counts / (train_counts + test_counts)
    assert torch.all((fraction - 0.2).abs() < 0.01)
    std = task.x_train.std(dim=0, correction=0)
    varying = std > 0
    assert torch.allclose(task.x_train.mean(dim=0), torch.zeros(64), atol=1e-5)
    assert torch.allclose(std[varying], torch.ones(int(varying.sum())), atol=1e-4)
    # No test image is also a training image (the raw data hold no exact duplicates).
    assert not torch.cdist(task.x_test, task.x_train).eq(0).any()


def test_stratified_split_keeps_singletons_in_training() -> None:
    labels = torch.tensor([0, 0, 0, 0, 0, 1, 1, 2])
    train, test = stratified_split(labels, 0.2, seed=0)
    assert sorted(torch.cat([train, test]).tolist()) == list(range(8))
    assert labels[test].tolist() == [0, 1]  # one of class 0 (5 x 0.2), one of class 1, none of 2


def write(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_regression_target(tmp_path: Path) -> None:
    rows = "\n".join(f"{i},{i % 7},{i * 0.5 + 0.25}" for i in range(30))
    path = write(tmp_path, f"a,b,price\n{rows}\n")
    task = load_task(f"csv:{path}", target="price", seed=0)
    assert task.kind == "regression"
    assert task.num_inputs == 2
    assert len(task.x_train) + len(task.x_test) == 30
    assert len(task.x_test) == 6
    # Targets are kept in raw units.
    prices = sorted(torch.cat([task.y_train, task.y_test]).flatten().tolist())
    assert prices == [i * 0.5 + 0.25 for i in range(30)]


def test_csv_string_target_is_classification(tmp_path: Path) -> None:
    rows = "\n".join(f"{i},{['cat', 'dog'][i % 2]}" for i in range(20))
    path = write(tmp_path, f"x,animal\n{rows}\n")
    task = load_task(f"csv:{path}", target="animal")
    assert task.kind == "classification"
    assert task.class_names == ("cat", "dog")
    assert task.num_outputs == 2
    assert sorted(torch.cat([task.y_train, task.y_test]).tolist()) == [0] * 10 + [1] * 10


def test_csv_integer_target_rule(tmp_path: Path) -> None:
    few = "\n".join(f"{i},{i % 3}" for i in range(30))
    path = write(tmp_path, f"x,y\n{few}\n")
    task = load_task(f"csv:{path}", target="y")
    assert task.kind == "classification"
    assert task.class_names == ("0", "1", "2")
    n = MAX_CLASSES_FOR_INTEGER_TARGET + 1
    many = "\n".join(f"{i},{i}" for i in range(n))
    path = write(tmp_path, f"x,y\n{many}\n", "many.csv")
    task = load_task(f"csv:{path}", target="y")
    assert task.kind == "regression"


@pytest.mark.parametrize(
    ("text", "target", "error", "message"),
    [
        ("", "y", ValueError, r"is empty; expected a header row"),
        ("\n\n", "y", ValueError, r"is empty"),
        ("x,y\n", "y", ValueError, r"has a header but no data rows"),
        ("x,y\n1,2\n3,4\n", "z", ValueError, r"column 'z' not found in .*; columns are: x, y"),
        ("x,y\n1,2\n3,4\nabc,5\n", "y", ValueError, r"line 4, column 'x': 'abc' is not a number"),
        ("x,y\n1,2\n\n3,4\n,5\n", "y", ValueError, r"line 5, column 'x': '' is not a number"),
        ("x,y\n1,2\ninf,4\n", "y", ValueError, r"line 3, column 'x': 'inf' is not a finite"),
        ("x,y\n1,2\n3,nan\n", "y", ValueError, r"line 3, column 'y': 'nan' is not a finite"),
        ("x,y\n1,2\n3,4,5\n", "y", ValueError, r"line 3: 3 fields, expected 2"),
        ("x,y\n1,a\n2,a\n", "y", ValueError, r"column 'y' has a single class 'a'"),
        ("x,y\n1,2\n2,\n", "y", ValueError, r"line 3, column 'y': the target is empty"),
        ("y\n1\n2\n", "y", ValueError, r"only the target column 'y'"),
        ("x,x,y\n1,2,3\n", "y", ValueError, r"header repeats column\(s\): x"),
        ("x,y\n1,2\n", "y", ValueError, r"has 1 data row; need at least 2"),
        ("x,y\n1,2\n3e38,4\n4e38,5\n", "y", ValueError,
         r"line 4, column 'x': the value is beyond float32's range \(±3.403e\+38\)"),
        ("x,y\n1,2.5\n3,-1e39\n", "y", ValueError, r"line 3, column 'y': the value is beyond"),
        ("x,y\n1,a\n2,b\n", "y", ValueError,
         r"the test split is empty: each of its 2 classes has a single row.*at least 3"),
        ("x,y\n1,a\n2,b\n3,c\n", "y", ValueError, r"each of its 3 classes .*at least 4"),
        ("x" * 140_000 + ",y\n1,2\n", "y", ValueError,
         r"line 1: cannot be read: field larger than field limit \(131072\); it is the header"),
    ],
)
def test_csv_errors_say_what_and_where(
    tmp_path: Path, text: str, target: str, error: type[Exception], message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(error, match=message):
        load_task(f"csv:{path}", target=target)


def test_csv_rows_the_reader_cannot_read_are_named_and_the_others_used(tmp_path: Path) -> None:
    huge = "1" * 140_000
    rows = [f"{i},{i + 0.5}" for i in range(10)]
    rows[3] = f"{huge},3.5"  # line 5
    rows[7] = f'"a\n{huge}",7.5'  # a quoted field over lines 9-10
    path = write(tmp_path, "x,y\n" + "\n".join(rows) + "\n")
    task = load_task(f"csv:{path}", target="y")
    assert len(task.x_train) + len(task.x_test) == 8
    limit = "cannot be read: field larger than field limit (131072); row skipped"
    assert task.notes == (f"{path} line 5: {limit}", f"{path} lines 9-10: {limit}")
    # The rows used are exactly the readable ones.
    used = torch.cat([task.y_train, task.y_test]).flatten().sort().values.tolist()
    assert used == [i + 0.5 for i in range(10) if i not in (3, 7)]


def test_csv_classification_with_a_class_of_two_rows_has_a_test_split(tmp_path: Path) -> None:
    path = write(tmp_path, "x,y\n1,a\n2,b\n3,a\n")
    task = load_task(f"csv:{path}", target="y")
    assert (len(task.x_train), len(task.x_test)) == (2, 1)


def test_csv_missing_file_and_missing_target(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"csv file not found: .*nope\.csv"):
        load_task(f"csv:{tmp_path / 'nope.csv'}", target="y")
    with pytest.raises(ValueError, match="needs the column to predict: --target COLUMN"):
        load_task(f"csv:{tmp_path / 'nope.csv'}")
    with pytest.raises(ValueError, match="is not a file"):
        load_task(f"csv:{tmp_path}", target="y")


def test_unknown_task_and_stray_target() -> None:
    with pytest.raises(ValueError, match=r"unknown task 'cubes'; expected one of: cubic, digits"):
        load_task("cubes")
    with pytest.raises(ValueError, match="--target is only for csv tasks"):
        load_task("cubic", target="y")
    with pytest.raises(ValueError, match="seed must be a non-negative integer, got -3"):
        load_task("cubic", seed=-3)


def test_digest_tells_data_apart() -> None:
    assert cubic_task(seed=0).digest() == cubic_task(seed=0).digest()
    assert cubic_task(seed=0).digest() != cubic_task(seed=1).digest()


@given(
    labels=st.lists(st.integers(0, 5), min_size=2, max_size=200),
    seed=st.integers(0, 1000),
)
def test_stratified_split_partitions_every_class(labels: list[int], seed: int) -> None:
    tensor = torch.tensor(labels)
    train, test = stratified_split(tensor, 0.2, seed)
    assert sorted(torch.cat([train, test]).tolist()) == list(range(len(labels)))
    for label in set(labels):
        n = labels.count(label)
        in_test = int((tensor[test] == label).sum())
        expected = 0 if n == 1 else min(max(round(0.2 * n), 1), n - 1)
        assert in_test == expected


@given(
    rows=st.lists(
        st.tuples(
            st.floats(-1e6, 1e6, allow_nan=False, width=32),
            st.integers(-(10**6), 10**6).map(lambda k: k + 0.5),  # exact in float32
        ),
        min_size=2,
        max_size=40,
    )
)
def test_csv_numbers_round_trip(
    tmp_path_factory: pytest.TempPathFactory, rows: list[tuple[float, float]]
) -> None:
    path = tmp_path_factory.mktemp("csv") / "t.csv"
    path.write_text("a,target\n" + "".join(f"{a!r},{t!r}\n" for a, t in rows))
    task = load_task(f"csv:{path}", target="target")
    assert task.kind == "regression"  # fractional targets
    got = sorted(torch.cat([task.y_train, task.y_test]).flatten().tolist())
    assert got == sorted(t for _, t in rows)
    assert len(task.x_train) + len(task.x_test) == len(rows)
    assert torch.isfinite(task.x_train).all()
