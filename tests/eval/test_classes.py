"""Class sets of two splits matched by name (eval/classes.py): hand-made labelled sources, no images decoded."""

import pytest
import torch

from ssdistill.errors import DataError
from ssdistill.eval.classes import align_classes
from ssdistill.eval.suite import Candidate, SuiteOptions, evaluate_suite


class Labelled:
    """A labelled source of ``len(labels)`` images; images are never loaded here."""

    def __init__(self, classes, labels, tag="a"):
        self.classes, self.labels, self.skipped, self.tag = list(classes), list(labels), [], tag
        self.paths = [f"/{tag}/{i}.jpg" for i in range(len(labels))]

    def __len__(self):
        return len(self.labels)

    def fingerprint(self):
        return f"{self.tag}:{len(self)}"


def test_identical_class_lists_are_passed_through_unchanged():
    memory, query = Labelled("abc", [0, 1, 2, 2]), Labelled("abc", [2, 0, 1], "q")
    aligned = align_classes(memory, query)
    assert aligned.query is query and aligned.positions is None
    assert aligned.record["scored_classes"] == 3 and aligned.record["memory_classes_not_in_query"] == []


def test_a_class_missing_from_the_query_shifts_nothing():
    # the query lacks 'a': on its own it numbers b=0, c=1; in the memory's ids they are 1 and 2
    memory, query = Labelled("abc", [0, 0, 1, 1, 2, 2]), Labelled("bc", [0, 1, 1, 0], "q")
    aligned = align_classes(memory, query)
    assert aligned.query.labels == [1, 2, 2, 1] and aligned.query.classes == ["a", "b", "c"]
    assert aligned.positions == [0, 1, 2, 3]
    assert aligned.record["memory_classes_not_in_query"] == ["a"]


def test_an_unknown_query_class_is_refused_naming_it_or_left_out_when_shared():
    memory, query = Labelled("abc", [0, 1, 2]), Labelled(["a", "b", "tench"], [0, 2, 1, 2], "q")
    with pytest.raises(DataError, match=r"class 'tench' that .* does not have .*its classes not in .*'c'.*eval.shared_classes=true"):
        align_classes(memory, query)
    aligned = align_classes(memory, query, shared=True)
    assert aligned.positions == [0, 2] and aligned.query.labels == [0, 1]
    assert aligned.record["classes_left_out"] == ["tench"] and aligned.record["query_images_left_out"] == 2
    table = torch.arange(4.0).view(4, 1)
    assert aligned.rows(table).flatten().tolist() == [0.0, 2.0]


def test_a_memory_class_without_images_counts_as_missing():
    memory, query = Labelled("abc", [0, 0, 1]), Labelled("abc", [0, 1, 2], "q")  # 'c' is an empty class folder
    with pytest.raises(DataError, match="class 'c' of which .* has no image"):
        align_classes(memory, query)


def test_one_class_memory_and_the_same_images_are_refused():
    with pytest.raises(DataError, match=r"has only one class \('a'\)"):
        align_classes(Labelled("a", [0, 0, 0]), Labelled("ab", [0, 1], "q"))
    split = Labelled("ab", [0, 1, 1, 0])
    with pytest.raises(DataError, match="holds the same images as"):
        align_classes(split, Labelled("ab", [0, 1, 1, 0]))


def test_classes_with_fewer_memory_images_than_k_are_recorded():
    aligned = align_classes(Labelled("ab", [0] * 5 + [1] * 30), Labelled("ab", [0, 1], "q"), k=20)
    assert aligned.record["classes_with_fewer_than_k_memory_images"] == ["a"]


class Fixed(torch.nn.Module):
    """Features that are the one-hot of an image's class name, so every metric is exact."""

    def forward(self, x):
        return x


def test_the_suite_scores_by_name_and_cuts_a_cached_teachers_rows():
    """Every metric of the suite reads the aligned labels: with features equal to the one-hot of each image's class
    name, k-NN and the linear probe are 100 % only if the query's labels were mapped by name; a cached teacher's
    query features over the whole split are cut to the scored rows."""
    names = ["a", "b", "c"]
    memory = Labelled(names, [0, 1, 2] * 4)
    query = Labelled(["b", "c", "zz"], [0, 1, 2, 0, 1], "q")  # 'zz' is unknown to the memory
    one_hot = lambda source: (
        torch.nn.functional.one_hot(  # noqa: E731
            torch.tensor([names.index(source.classes[l]) if source.classes[l] in names else 0 for l in source.labels]), 4
        ).float()
        + 0.01 * torch.randn(len(source), 4)
    )
    teacher = Candidate("teacher", Fixed(), None, 8, one_hot(memory), one_hot(query))
    options = SuiteOptions(knn=((3, 0.07),), linear=False, few_shot=False, clustering=False, embedding_points=0, shared_classes=True)
    import ssdistill.eval.suite as suite_module

    saved = suite_module.model_flops, suite_module.model_throughput
    suite_module.model_flops = suite_module.model_throughput = lambda *a, **k: 0.0
    try:
        suite = evaluate_suite([teacher], memory, query, options)
    finally:
        suite_module.model_flops, suite_module.model_throughput = saved
    assert suite["models"]["teacher"]["knn"]["k3_t0.07"]["top1"] == 100.0
    assert suite["classes"]["query_images_left_out"] == 1 and suite["classes"]["classes_left_out"] == ["zz"]
    with pytest.raises(DataError, match="'zz'"):
        evaluate_suite([teacher], memory, query, SuiteOptions.knn_only(3, 0.07))


def test_shared_classes_with_no_class_in_common_is_refused():
    with pytest.raises(DataError, match="has no class in common with"):
        align_classes(Labelled("ab", [0, 1]), Labelled("xy", [0, 1], "q"), shared=True)
