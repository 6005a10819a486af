from ssdistill.data.datasets import IndexedViews, open_images, seeded_subset
from ssdistill.data.views import augmented_view, original_view

__all__ = ["IndexedViews", "open_images", "seeded_subset", "augmented_view", "original_view"]
