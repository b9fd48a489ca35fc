"""SAFE+'s activation statistic: ``flatsparse.models.activations``.

Re-exported here because SAFE+ is its first user; the capture itself is a
model utility shared with Wanda-style importance.
"""

from flatsparse.models.activations import input_feature_norms

__all__ = ["input_feature_norms"]
