"""Generated domains: data that needs no download, for the demo, tests and small studies."""
