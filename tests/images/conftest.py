"""The image tests need the images `make images` built (minutes, buildah as root), so they run by
`make images-test` (which sets DDNRAG_IMAGES_TEST=1 after building) and `.ci/run`, not by the
plain `pytest` of `make test`."""

import os

collect_ignore_glob = [] if os.environ.get("DDNRAG_IMAGES_TEST") == "1" else ["test_*.py"]
