"""Property-based tests. Hypothesis keeps its caches in the temporary folder, not in the work tree."""

import tempfile
from pathlib import Path

from hypothesis.configuration import set_hypothesis_home_dir

set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "sagad-hypothesis")
