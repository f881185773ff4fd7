"""Files shipped inside the package (examples, the sample point cloud, the demo capture).

They are found through ``importlib.resources`` so that an installed wheel finds them as well as a source checkout.
"""

from importlib import resources
from pathlib import Path

_PACKAGE = "noether.explorer"
_FOLDER = "assets"


def asset_path(relative: str) -> Path:
    """Filesystem path of a shipped file, e.g. ``asset_path("examples/self_anchor.yaml")``."""
    # Wheels and source trees install as plain directories, so the traversable is a real path.
    return Path(str(resources.files(_PACKAGE).joinpath(_FOLDER, *relative.split("/"))))


def examples_dir() -> Path:
    """Folder of the built-in example scenarios."""
    return asset_path("examples")
