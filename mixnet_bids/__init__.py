"""mixnet-bids: MixNet brain-tissue segmentation as a BIDS-App."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mixnet-bids")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
