"""Long Range Arena: data generators, release-file readers and the six tasks."""
