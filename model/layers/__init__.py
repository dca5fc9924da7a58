"""Building blocks shared by the architectures (timm's ``layers/``): each network file holds only
what is its own."""

from arinext.model.layers.conv_bn import ConvBN, Stem, load_conv, to_pair
from arinext.model.layers.heads import MultiHeadClassifier, make_linear_heads

__all__ = ["ConvBN", "MultiHeadClassifier", "Stem", "load_conv", "make_linear_heads", "to_pair"]
