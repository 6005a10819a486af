"""Class sets of two labelled splits, matched by name.

Every source numbers its classes by sorted name on its own, so class id 3 of a validation folder that lacks one of the
training folder's classes is another class than id 3 of the training folder. Every evaluation (k-NN, linear probe,
few-shot, clustering, a trained classifier) therefore reads the evaluation split through ``align_classes``: its labels
are mapped into the memory split's class names. A class of the evaluation split that the memory split has no image of
cannot be predicted by any probe: it is refused in one line, or, with ``shared=True`` (``eval.shared_classes``), its
images are left out and the record says how many. A memory split with one class, or the same images as the evaluation
split, gives figures that mean nothing and is refused too.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ssdistill.data.datasets import ImageSource, SubsetImages
from ssdistill.errors import DataError

log = logging.getLogger("ssdistill")

SHOWN = 3  # class names a message lists before "..."
_warned: set[str] = set()  # the check before training and the evaluation after it would say the same thing twice


def _warn_once(message: str, *args) -> None:
    text = message % args
    if text not in _warned:
        _warned.add(text)
        log.warning(text)


def class_names(source: ImageSource) -> list[str]:
    """The split's class names (id -> name); a labelled source without names is numbered."""
    if source.classes:
        return list(source.classes)
    return [str(c) for c in range(max(source.labels or [-1]) + 1)]


def _listed(names: list[str]) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


class RelabelledImages(SubsetImages):
    """Images of a split at ``positions``, labelled with ids into another split's class names."""

    def __init__(self, source: ImageSource, positions: list[int], labels: list[int], classes: list[str]) -> None:
        super().__init__(source, positions)
        self.labels, self.classes = labels, classes


@dataclass
class ClassAlignment:
    query: ImageSource  # the evaluation split, labelled in the memory's class ids (a subset with shared classes)
    positions: list[int] | None = None  # the evaluation split's rows kept, in order; None: all of them, labels unchanged
    record: dict[str, Any] = field(default_factory=dict)

    def rows(self, table):
        """The rows of a table computed over the whole evaluation split (a cached teacher's features) that are scored."""
        return table if table is None or self.positions is None else table[self.positions]


def class_note(record: dict[str, Any] | None) -> str | None:
    """One sentence on a class matching that was not one to one (None when it was): what a table must say under it."""
    if not record:
        return None
    parts = []
    if record.get("classes_left_out"):
        parts.append(
            f"{record['query_images_left_out']} evaluation images of {len(record['classes_left_out'])} class(es) the memory lacks left out "
            f"({', '.join(record['classes_left_out'][:SHOWN])}{' ...' if len(record['classes_left_out']) > SHOWN else ''})"
        )
    if record.get("memory_classes_not_in_query"):
        absent = record["memory_classes_not_in_query"]
        parts.append(
            f"scored on {record['scored_classes']} of the memory's {record['memory_classes']} classes ({len(absent)} absent from the evaluation split)"
        )
    return "; ".join(parts) or None


def same_images(a: ImageSource, b: ImageSource) -> bool:
    """Whether two sources are the same images (same content fingerprint, or the same files in the same order)."""
    paths_a, paths_b = getattr(a, "paths", None), getattr(b, "paths", None)
    if paths_a is not None and paths_b is not None and len(paths_a) == len(paths_b):
        return [str(p) for p in paths_a] == [str(p) for p in paths_b] or a.fingerprint() == b.fingerprint()
    try:
        return len(a) == len(b) and a.fingerprint() == b.fingerprint()
    except Exception:  # a source that cannot fingerprint itself cheaply is not compared
        return False


def align_classes(
    memory: ImageSource,
    query: ImageSource,
    shared: bool = False,
    memory_name: str = "the k-NN memory split",
    query_name: str = "the evaluation split",
    k: int | None = None,
    check_images: bool = True,
) -> ClassAlignment:
    """The evaluation split ``query`` labelled in ``memory``'s class ids, matched by class name.

    Refused (``DataError``, one line): a memory split with fewer than two classes that have images; an evaluation class
    the memory split has no image of (unless ``shared``: then its images are left out and counted in the record); the
    same images in both splits (``check_images``). Classes of the memory split that the evaluation split lacks are
    fine (they can still be predicted, as they would be in deployment) and are named in the record. ``k``: classes with
    fewer memory images than the k-NN's k are named in the record and a warning."""
    if memory.labels is None or query.labels is None:
        raise DataError(f"evaluation needs labelled splits (class sub-folders): {memory_name if memory.labels is None else query_name} has none")
    memory_names, query_names = class_names(memory), class_names(query)
    memory_counts, query_counts = Counter(memory.labels), Counter(query.labels)
    populated = [name for c, name in enumerate(memory_names) if memory_counts[c] > 0]
    if len(populated) < 2:
        what = f"only one class ('{populated[0]}')" if populated else "no labelled images"
        raise DataError(
            f"{memory_name} has {what}: k-NN and probes need two or more classes; point it at a folder with one sub-folder per "
            f"class (for label-free training on one folder, set data.knn_train to a labelled split, or data.val=null)"
        )
    if check_images and same_images(memory, query):
        raise DataError(
            f"{query_name} holds the same images as {memory_name}: every image would find itself as its nearest neighbour; "
            "evaluate on held-out images (a separate val folder)"
        )
    index = {name: c for c, name in enumerate(memory_names)}
    scored_names = set(populated)
    query_present = [name for c, name in enumerate(query_names) if query_counts[c] > 0]
    missing = [name for name in query_present if name not in scored_names]
    record: dict[str, Any] = {
        "matched_by": "name",
        "memory_classes": len(populated),
        "query_classes": len(query_present),
        "memory_classes_not_in_query": sorted(scored_names - set(query_present)),
        "names": memory_names,  # the class ids every evaluation figure uses (the report's class legend)
    }
    if missing and not shared:
        unknown = [n for n in missing if n not in index]
        empty = [n for n in missing if n in index]
        why = (f"class {_listed(unknown)} that {memory_name} does not have" if unknown else "") + (
            (" and " if unknown else "") + f"class {_listed(empty)} of which {memory_name} has no image" if empty else ""
        )
        close = [n for n in sorted(scored_names - set(query_present))][:SHOWN]
        hint = f" (its classes not in {query_name}: {_listed(close)})" if unknown and close else ""
        raise DataError(
            f"{query_name} has {why}{hint}: no probe can predict it; give both splits the same class folder names, or set "
            f"eval.shared_classes=true to score only the classes both have"
        )
    identical = query_names == memory_names[: len(query_names)] and not missing
    if identical:
        alignment = ClassAlignment(query, None, record)
    else:
        positions = [i for i, label in enumerate(query.labels) if query_names[label] in scored_names]
        if not positions:
            raise DataError(
                f"{query_name} has no class in common with {memory_name} (its classes: {_listed(query_present)}; the memory's: "
                f"{_listed(populated)}): nothing can be scored; give both splits the same class folder names"
            )
        labels = [index[query_names[query.labels[i]]] for i in positions]
        alignment = ClassAlignment(RelabelledImages(query, positions, labels, memory_names), positions, record)
    record["scored_classes"] = len(set(query_present) & scored_names)
    record["query_images_scored"] = len(alignment.query)
    if missing:
        record["classes_left_out"] = missing
        record["query_images_left_out"] = len(query) - len(alignment.query)
        _warn_once(
            "%s: %d of its %d classes are not in %s and are left out (eval.shared_classes=true): %d images scored, %d left out",
            query_name,
            len(missing),
            len(query_present),
            memory_name,
            len(alignment.query),
            len(query) - len(alignment.query),
        )
    if k:
        few = [memory_names[c] for c in sorted(memory_counts) if 0 < memory_counts[c] < k]
        if few:
            record["classes_with_fewer_than_k_memory_images"] = few
            _warn_once(
                "%s has fewer than k=%d images of class %s: its queries are outvoted by other classes' neighbours (lower eval.knn_k)",
                memory_name,
                k,
                _listed(few),
            )
    return alignment
