"""Applications built on the library: the bundled classifier, classify-cli, OpenVINO IR export."""
